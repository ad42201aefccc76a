"""The real pipeline: `dvc repro` and `dvc exp run` on the tiny model in a temporary git repo.

The scenario runs in order (each step starts from the state the previous one left):
full build -> no-op rerun -> eval-only change -> LoRA-rank experiment -> model switch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from medtune.config import compose_params

pytestmark = pytest.mark.pipeline

# Small enough for CI, still every stage and every param path of the real pipeline.
TINY = {
    "model": "tiny-random",
    "train": {"epochs": 1, "eval_steps": 4, "logging_steps": 2},
    "tasks": {"qa": {"max_length": 512, "generation": {"max_new_tokens": 8}}},
    "eval": {"batch_size": 4, "max_examples": 4},
}


def run(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def dvc(repo: Path, *args: str) -> str:
    return run(repo, sys.executable, "-m", "dvc", *args)


def set_root_config(repo: Path, **values) -> None:
    """Edit conf/config.yaml (keys after `_self_` override the groups), as a user would."""
    path = repo / "conf" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in values.items():
        if key == "model":
            config["defaults"][0] = {"model": value}
        else:
            config[key] = {**config.get(key, {}), **value}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("medtune-repo")
    for name in ("conf", "stages", "src", "dvc.yaml", ".dvcignore", ".gitignore"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, repo / name)
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "data" / "raw").mkdir(parents=True)
    lines = (ROOT / "data" / "raw" / "qa.jsonl").read_text().splitlines(keepends=True)
    (repo / "data" / "raw" / "qa.jsonl").write_text("".join(lines[:60]))
    set_root_config(repo, **TINY)
    compose_params(repo)
    run(repo, "git", "init", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny project")
    return repo


def test_repro_builds_every_stage_and_writes_the_metrics(repo):
    ran = stages_run(dvc(repo, "repro"))
    assert ran == {"base", "prepare@qa", "tokenize@qa", "train@qa", "merge@qa", "evaluate@qa"}
    evaluation = json.loads((repo / "metrics/qa/eval.json").read_text())
    for model in ("base", "finetuned"):
        assert evaluation[model]["perplexity"] > 1 and evaluation[model]["examples"] == 4
        assert 0 <= evaluation[model]["rouge_l"] <= 1
    assert json.loads((repo / "metrics/qa/merge.json").read_text())["max_abs_logit_diff"] <= 1e-4
    train = json.loads((repo / "metrics/qa/train.json").read_text())
    assert train["steps"] > 0 and 0 < train["trainable_share"] < 1
    assert (repo / "models/adapters/qa/adapter_model.safetensors").is_file()
    assert (repo / "metrics/qa/live/plots/metrics/train/loss.tsv").is_file()
    assert len((repo / "metrics/qa/samples.jsonl").read_text().splitlines()) == 4
    assert "models/merged/qa" in (repo / "dvc.lock").read_text()


def test_a_second_repro_runs_nothing(repo):
    assert stages_run(dvc(repo, "repro")) == set()
    assert "up to date" in dvc(repo, "status")


def test_an_evaluation_param_reruns_only_evaluate(repo):
    set_root_config(repo, eval={"batch_size": 2})
    compose_params(repo)
    assert stages_run(dvc(repo, "repro")) == {"evaluate@qa"}


def test_an_experiment_on_lora_rank_reruns_train_merge_and_evaluate(repo):
    ran = stages_run(dvc(repo, "exp", "run", "-S", "peft.r=16"))
    assert ran == {"train@qa", "merge@qa", "evaluate@qa"}
    assert yaml.safe_load((repo / "params.yaml").read_text())["peft"]["r"] == 16  # dvc composed it from conf/


def test_switching_the_model_reruns_everything_downstream_of_base(repo):
    (repo / "conf/model/tiny-random-b.yaml").write_text(
        "defaults: [tiny-random, _self_]\nname: tiny-random-b\nweights: {init_seed: 1}\n"
    )
    ran = stages_run(dvc(repo, "exp", "run", "-S", "model=tiny-random-b"))
    assert ran == {"base", "tokenize@qa", "train@qa", "merge@qa", "evaluate@qa"}
    assert (repo / "models/base/tiny-random-b/model.safetensors").is_file()
