"""Resumable training: the train stage's checkpoints folder, a `persist: true` DVC output that a rerun keeps.

The Trainer saves a checkpoint (adapter, optimizer, scheduler, RNG states, trainer state with the loss history)
every `train.checkpoint_steps` (steps, or a fraction of an epoch: medtune.training.interval_steps) as
`checkpoint-<step>/`. Its own save is not atomic, so a checkpoint counts only once `state.json` names it, which
`RecordCheckpoints` writes (atomically) after the Trainer has finished saving it: a run killed in the middle of a
save resumes from the checkpoint before. `state.json` also holds a fingerprint of everything the run depends on, so
a checkpoint of another configuration or other data is deleted, never resumed.
A finished run deletes its checkpoints and leaves only `state.json`, so a forced rerun trains from the start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from medtune.config import Params
from medtune.io import read_json, write_json

log = logging.getLogger(__name__)

STATE = "state.json"
PREFIX = "checkpoint-"


class Run:
    """A resumable training run in `folder`: the fingerprint of its `inputs` (a JSON-able object) and of the files of
    the model it starts from, the checkpoint to resume from (`resume`, None: start afresh), the Trainer callback that
    records each checkpoint (`callback`), and `finish()` once the adapter is saved. The SFT and the DPO run share it."""

    def __init__(self, folder: Path, inputs: dict, model_dir: Path):
        self.folder = folder
        self.fingerprint = fingerprint(inputs, [p for p in Path(model_dir).iterdir() if p.is_file()])
        self.resume = resume_point(folder, self.fingerprint)
        self.callback = RecordCheckpoints(folder, self.fingerprint)

    def finish(self) -> None:
        finish(self.folder, self.fingerprint)


def fingerprint(params: Params, files: list[Path]) -> str:
    """sha256 of the run's params (a JSON-able object) and the contents of the files it reads."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for path in sorted(files):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def is_main_process() -> bool:
    """Whether this process writes the run's files. Under `accelerate launch` every process runs the same code and
    reads the same inputs, so only process 0 (RANK 0) writes, or they would overwrite each other; a plain run has no
    RANK and is process 0."""
    return int(os.environ.get("RANK", "0")) == 0


def resume_point(folder: Path, run: str) -> Path | None:
    """The checkpoint to resume this run from, or None. Everything else in `folder` is deleted: partial saves,
    older checkpoints, and all of it when the fingerprint `run` differs from the one that wrote it.
    Under `accelerate launch` every process finds the same checkpoint and only process 0 deletes."""
    folder.mkdir(parents=True, exist_ok=True)
    state_file = folder / STATE
    state = read_json(state_file) if state_file.is_file() else {}
    keep = None
    if state.get("fingerprint") == run and state.get("step") is not None:
        keep = folder / f"{PREFIX}{state['step']}"
        keep = keep if keep.is_dir() else None
    if is_main_process():
        for path in folder.glob(f"{PREFIX}*"):
            if path != keep:
                shutil.rmtree(path)
        record(folder, run, state["step"] if keep else None)
    if keep is not None:
        log.info("Resuming training from %s (saved by an interrupted run of this configuration)", keep)
    return keep


def finish(folder: Path, run: str) -> None:
    """The run is done: its adapter is saved, so the checkpoints go, and whatever else the trainer wrote beside them
    (TRL's trainers write a model card there)."""
    for path in folder.iterdir():
        if path.name != STATE:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    record(folder, run, None)


def record(folder: Path, run: str, step: int | None) -> None:
    """state.json: the fingerprint of the run and its last complete checkpoint (None: none to resume from)."""
    write_json(folder / STATE, {"fingerprint": run, "step": step})


class RecordCheckpoints(TrainerCallback):
    """Name the checkpoint the Trainer has just finished saving in state.json (process 0 only)."""

    def __init__(self, folder: Path, run: str):
        self.folder, self.run = folder, run

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.is_world_process_zero:
            record(self.folder, self.run, state.global_step)
        return control
