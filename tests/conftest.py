"""Shared fixtures: the project root and a tiny random Llama built from config (no files, no hub)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from medtune.config import WeightsConfig
from medtune.io import write_jsonl
from medtune.modeling import build_base_model
from medtune.scope import ScopeClassifier, ScopeGuard, embed, load_embedder, read_scope_questions

ROOT = Path(__file__).resolve().parents[1]
# the train stage on the `project` fixture's data; then base dir, adapter, metrics and checkpoint folders
TRAIN_STAGE = [sys.executable, "-m", "stages.train", "qa", "data/tokenized/qa"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/base/tiny-random as the base stage writes it."""
    out = tmp_path_factory.mktemp("tiny-random")
    build_base_model(OmegaConf.structured(WeightsConfig(source="tiny-random")), out)
    return out


@pytest.fixture(scope="session")
def authored_guard() -> ScopeGuard:
    """The scope guard as the `scope` stage trains it: all-MiniLM-L6-v2 embeddings of data/raw/scope_train.jsonl."""
    train = read_scope_questions(ROOT / "data/raw/scope_train.jsonl")
    embedder = load_embedder()
    vectors = embed(embedder, [q["text"] for q in train])
    return ScopeGuard(ScopeClassifier.fit(vectors, [q["in_scope"] for q in train], c=1.0, threshold=0.5), embedder)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def tokenized_qa(folder: Path) -> None:
    """Counting sequences (a random start, then +1 each token: learnable) in the tokenize stage's layout."""
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", 64), ("validation", 8), ("test", 4)):
        examples = []
        for i in range(count):
            start, length = int(torch.randint(3, 200, (1,), generator=g)), int(torch.randint(8, 20, (1,), generator=g))
            ids = list(range(start, start + length))
            examples.append({"id": f"qa-{i}", "input_ids": ids, "labels": [-100] * 3 + ids[3:]})
        write_jsonl(folder / f"{split}.jsonl", examples)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder for running the train stage by hand: conf/, stages/ and a tokenized `qa` task."""
    for name in ("conf", "stages"):
        (tmp_path / name).symlink_to(ROOT / name)
    tokenized_qa(tmp_path / "data" / "tokenized" / "qa")
    return tmp_path
