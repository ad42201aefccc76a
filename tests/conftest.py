"""Shared fixtures: the project root and a tiny random Llama built from config (no files, no hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medtune.config import WeightsConfig
from medtune.modeling import build_base_model
from medtune.scope import ScopeClassifier, ScopeGuard, embed, load_embedder, read_scope_questions

ROOT = Path(__file__).resolve().parents[1]


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
