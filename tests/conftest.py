"""Shared fixtures and helpers: the project root, project folders to run stages in, and a tiny random Llama built
from config (no files, no hub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from medtune.config import (
    DataConfig,
    JudgeConfig,
    ModelConfig,
    PeftConfig,
    TaskConfig,
    TrainConfig,
    WeightsConfig,
    compose_params,
    conf_section,
)
from medtune.io import write_jsonl
from medtune.modeling import build_base_model
from medtune.scope import ScopeClassifier, ScopeGuard, embed, load_embedder, read_scope_questions

# pytest runs one worker per core (pyproject's addopts): each worker, and every stage or command it starts, then uses
# one thread, so that two workers do not make torch's thread pools fight over the same two cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
# the train stage on the `project` fixture's data; then base dir, adapter, metrics and checkpoint folders
TRAIN_STAGE = [sys.executable, "-m", "stages.train", "qa", "data/tokenized/qa"]
# the environment stages run in as subprocesses: never the hub, and one error line not wrapped by rich
STAGE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "300"}


# One config section with conf/'s defaults and the values a test sets (the dataclasses hold no defaults)
def tiny_weights(**values: object) -> WeightsConfig:
    """model.weights of conf/model/tiny-random.yaml: the tiny random Llama."""
    return conf_section(WeightsConfig, ROOT / "conf/model/tiny-random.yaml", "weights", **values)


def a_model(**values: object) -> ModelConfig:
    """The model section of conf/model/tiny-random.yaml."""
    return conf_section(ModelConfig, ROOT / "conf/model/tiny-random.yaml", **values)


def a_train(**values: object) -> TrainConfig:
    """The train section of conf/train/cpu.yaml."""
    return conf_section(TrainConfig, ROOT / "conf/train/cpu.yaml", **values)


def a_peft(recipe: str = "lora", **values: object) -> PeftConfig:
    """The peft section of conf/peft/<recipe>.yaml (qlora's file adds its quantization block to lora's)."""
    lora = conf_section(PeftConfig, ROOT / "conf/peft/lora.yaml")
    return OmegaConf.merge(lora, conf_section(PeftConfig, ROOT / f"conf/peft/{recipe}.yaml", **values))


def a_task(**values: object) -> TaskConfig:
    """A task with conf/task/common.yaml's defaults (every task file starts from them)."""
    return conf_section(TaskConfig, ROOT / "conf/task/common.yaml", **values)


def a_data(**values: object) -> DataConfig:
    """A task's data section with conf/task/common.yaml's defaults."""
    return conf_section(DataConfig, ROOT / "conf/task/common.yaml", "data", **values)


def a_judge(**values: object) -> JudgeConfig:
    """The judge section of conf/config.yaml."""
    return conf_section(JudgeConfig, ROOT / "conf/config.yaml", "judge", **values)


def link_project(folder: Path, *names: str) -> Path:
    """Make `folder` a project by linking the repository's `names` (conf, stages) into it."""
    for name in names:
        (folder / name).symlink_to(ROOT / name)
    return folder


@pytest.fixture
def conf_project(tmp_path: Path) -> Path:
    """A project folder with only conf/: enough for `compose_params(conf_project, overrides)`."""
    return link_project(tmp_path, "conf")


def make_project(folder: Path, qa_lines: list[str], overrides: list[str] = ()) -> Path:
    """A minimal project (conf/, stages/, params.yaml, data/raw/qa.jsonl with `qa_lines`) to run stages in."""
    link_project(folder, "conf", "stages")
    (folder / "data" / "raw").mkdir(parents=True)
    write_lines(folder / "data" / "raw" / "qa.jsonl", qa_lines)
    compose_params(folder, list(overrides))
    return folder


def run_stage(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m <args>` in `project` with STAGE_ENV, e.g. `run_stage(project, "stages.prepare", "qa", out)`."""
    return subprocess.run([sys.executable, "-m", *args], cwd=project, capture_output=True, text=True, env=STAGE_ENV)


def qa(i: int, answer: str = "A short answer.") -> str:
    """Line `i` of a raw question-answer file."""
    return json.dumps({"id": f"qa-{i}", "question": f"Question number {i}?", "answer": answer})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/base/tiny-random as the base stage writes it."""
    out = tmp_path_factory.mktemp("tiny-random")
    build_base_model(tiny_weights(), out)
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
    link_project(tmp_path, "conf", "stages")
    tokenized_qa(tmp_path / "data" / "tokenized" / "qa")
    return tmp_path
