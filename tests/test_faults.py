"""Faults: a training run killed with SIGKILL resumes from its last checkpoint and ends exactly where an
uninterrupted run ends; a killed stage leaves no output that looks finished."""

from __future__ import annotations

import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import STAGE_ENV, TRAIN_STAGE
from medtune.config import compose_params
from medtune.io import read_json

# 64 examples, batch 4, 2 epochs: 32 steps; a checkpoint every 4 (the loss is logged every 2); batches of similar
# lengths, in an order drawn anew each epoch
RESUMABLE = ["model=tiny-random", "train.epochs=2", "train.batch_size=4", "train.lr=1e-2", "train.logging_steps=2",
             "train.eval_steps=8", "train.checkpoint_steps=4", "train.group_by_length=true"]  # fmt: skip


def start_training(project: Path, base_dir: Path, run: str) -> subprocess.Popen:
    """The train stage writing to `run`/{adapter,metrics,checkpoints}, in the background."""
    outputs = [str(project / run / name) for name in ("adapter", "metrics", "checkpoints")]
    return subprocess.Popen(
        [*TRAIN_STAGE, str(base_dir), *outputs],
        cwd=project,
        env=STAGE_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finished(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output[-3000:]
    return output


def kill_after_checkpoint(process: subprocess.Popen, checkpoints: Path, step: int) -> None:
    """SIGKILL the run as soon as its checkpoint of `step` is recorded: mid-training, no chance to clean up."""
    state = checkpoints / "state.json"
    deadline = time.monotonic() + 120
    while not (state.is_file() and (read_json(state).get("step") or 0) >= step):
        assert process.poll() is None and time.monotonic() < deadline, "training ended before the checkpoint"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def results(run: Path) -> tuple[str, dict[str, torch.Tensor], dict[str, str]]:
    """What a finished run leaves: train.json, the adapter's tensors and the dvclive files (curves and summary)."""
    live = run / "metrics" / "live"
    return (
        (run / "metrics" / "train.json").read_text(),
        load_file(next((run / "adapter").glob("*.safetensors"))),  # the adapter, or the whole model (peft=full)
        {str(p.relative_to(live)): p.read_text() for p in sorted(live.rglob("*")) if p.is_file()},
    )


@pytest.mark.parametrize("recipe", ["lora", "full"])
def test_a_run_killed_mid_training_resumes_from_its_checkpoint_and_ends_with_the_same_adapter(
    project, tiny_model_dir, recipe
):
    compose_params(project, [*RESUMABLE, f"peft={recipe}"])
    uninterrupted = start_training(project, tiny_model_dir, "once")
    finished(uninterrupted)

    killed = start_training(project, tiny_model_dir, "twice")
    kill_after_checkpoint(killed, project / "twice" / "checkpoints", step=20)  # 4 steps into the second epoch
    assert killed.returncode == -signal.SIGKILL
    assert not (project / "twice" / "adapter").exists() and not (project / "twice" / "metrics" / "train.json").exists()
    log = finished(start_training(project, tiny_model_dir, "twice"))

    resumed_from = read_json(project / "twice" / "metrics" / "train_resources.json")["resumed_from_step"]
    assert resumed_from >= 20 and f"checkpoint-{resumed_from}" in log
    once, twice = results(project / "once"), results(project / "twice")
    assert twice[0] == once[0]  # train.json byte for byte: final losses, steps
    assert twice[1].keys() == once[1].keys()
    for name, tensor in once[1].items():
        torch.testing.assert_close(twice[1][name], tensor, atol=1e-6, rtol=0)
    assert twice[2] == once[2]  # every curve and the summary, the part before the kill included
    assert {"plots/metrics/loss.tsv", "plots/metrics/eval/loss.tsv", "metrics.json"} <= once[2].keys()
    assert read_json(project / "once" / "metrics" / "train.json")["steps"] == 32
    assert [p.name for p in (project / "twice" / "checkpoints").iterdir()] == ["state.json"]  # cleared when done


def run_in_process(project: Path, monkeypatch, module: str, *args: str) -> None:
    """Run a stage as `python -m <module> <args>` does, but in this process (so the test can fake the disk)."""
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", [module, *args])
    runpy.run_module(module, run_name="__main__")


@pytest.mark.parametrize(
    "stage, args, what",
    [
        ("stages.base", ["models/base/tiny-random"], "The base model tiny-random"),
        ("stages.merge", ["qa", "data/tokenized/qa", "{base}", "adapter", "models/merged/qa", "metrics"], "merged qa"),
        ("stages.export", ["qa", "data/tokenized/qa", "{base}", "metrics", "models/export/qa"], "GGUF files of qa"),
    ],
)
def test_stages_that_write_models_check_free_disk_first(
    stage, args, what, project, tiny_model_dir, monkeypatch, capsys
):
    compose_params(project, ["model=tiny-random"])
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 2**10, 2**10))
    with pytest.raises(SystemExit) as stopped:
        run_in_process(project, monkeypatch, stage, *[a.format(base=tiny_model_dir) for a in args])

    assert stopped.value.code == 1
    error = " ".join(capsys.readouterr().err.split())
    assert re.search(rf"error: .*{what}.* needs about [\d.]+ MiB in \S+, but its disk has 0.0 MiB free", error)
    assert not (project / args[-2 if stage == "stages.merge" else -1]).exists()
