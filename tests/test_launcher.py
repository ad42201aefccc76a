"""`train.launcher=accelerate`: the train stage runs as 2 DDP processes on the CPU (gloo) and learns what one
process learns from the same global batches."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
from pathlib import Path

import pytest

from conftest import STAGE_ENV, TRAIN_STAGE
from medtune.config import compose_params
from medtune.io import read_json
from stages.train import output_dir


def train_in(project: Path, base_dir: Path, overrides: list[str]) -> tuple[dict, list[float], list[float]]:
    """Run the train stage with these params; its train.json, training loss curve and validation loss curve."""
    compose_params(project, ["model=tiny-random", "train.epochs=2", "train.bf16=false", "train.logging_steps=1",
                             "train.eval_steps=4", "train.lr=1e-2", *overrides])  # fmt: skip
    command = [*TRAIN_STAGE, str(base_dir), "adapter", "metrics", "checkpoints"]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, env=STAGE_ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    curves = project / "metrics" / "live" / "plots" / "metrics"
    train_json = read_json(project / "metrics" / "train.json")
    return train_json, _losses(curves / "loss.tsv"), _losses(curves / "eval/loss.tsv")


def _losses(tsv: Path) -> list[float]:
    with open(tsv, encoding="utf-8") as f:
        return [float(row["loss"]) for row in csv.DictReader(f, delimiter="\t")]


def test_two_cpu_processes_follow_the_loss_curve_of_one_process_with_the_same_global_batch(project, tiny_model_dir):
    one, one_curve, one_eval = train_in(project, tiny_model_dir, ["train.batch_size=8"])
    two, two_curve, two_eval = train_in(
        project,
        tiny_model_dir,
        ["train.batch_size=4", "train.launcher=accelerate"],  # 2 processes x 4 = 8
    )

    assert (one["processes"], two["processes"]) == (1, 2)  # accelerate's MULTI_CPU trap would run 1 process
    assert one["steps"] == two["steps"] == 16 and len(one_curve) == len(two_curve) == 16
    # fp32 on CPU: the same examples in each global batch, gradients averaged by DDP; only summation order differs
    assert two_curve == pytest.approx(one_curve, rel=1e-4)
    assert two_eval == pytest.approx(one_eval, rel=1e-4)
    assert one_eval[-1] < one_eval[0] - 0.1  # and it does learn
    assert json.loads((project / "adapter" / "adapter_config.json").read_text())["r"] == 8


def test_a_missing_accelerate_config_is_a_config_error(project, tiny_model_dir):
    compose_params(project, ["model=tiny-random", "train.launcher=accelerate", "train.accelerate_config=nope.yaml"])
    command = [*TRAIN_STAGE, str(tiny_model_dir), "a", "m", "c"]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, env=STAGE_ENV)

    assert done.returncode == 1
    assert "config key `train.accelerate_config`: nope.yaml not found" in done.stderr
    assert not (project / "a").exists()


@pytest.mark.parametrize(("rank", "writes"), [(None, True), ("0", True), ("1", False)])
def test_only_process_0_writes_the_stage_outputs(rank, writes, tmp_path, monkeypatch):
    if rank is None:  # a plain run, not under `accelerate launch`
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    with contextlib.ExitStack() as stack:
        (output_dir(stack, tmp_path / "adapter") / "adapter_model.safetensors").write_text("weights")

    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file() == writes
    assert [p.name for p in tmp_path.iterdir()] == (["adapter"] if writes else [])  # no scratch copy left behind
