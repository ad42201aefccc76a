"""A medtune project as a user has it, in a temporary git repo, on the tiny model: make one, run `dvc` and the CLI
in it under the network guard, edit its config as a user would, and read back what a build wrote."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from conftest import ROOT
from medtune.config import compose_params

# Small enough for CI, still every stage and every param path of the real pipeline.
TINY = {
    "model": "tiny-random",
    # a checkpoint every 20 steps: ner (8 epochs of 4 steps) saves one mid-run and one at the end, which the kill
    # test kills each (train=cpu's quarter epoch would be 16 checkpoints, each one more killed build)
    "train": {"epochs": 1, "eval_steps": 4, "logging_steps": 2, "checkpoint_steps": 20},
    "eval": {"batch_size": 4, "max_examples": 4, "general": {"max_examples": 6}},
}
TINY_GENERATIVE_TASK = {"max_length": 640, "generation": {"max_new_tokens": 8}}


# Every command below runs with internet sockets refused (tests/no_network/sitecustomize.py): the pipeline and the
# CLI need no network unless a user configures the judge or a hub model. Attempts are logged here and fail the test.
NETWORK_LOG = Path(tempfile.gettempdir()) / f"medtune-network-attempts-{os.getpid()}.log"
OFFLINE = {"PYTHONPATH": str(ROOT / "tests" / "no_network"), "MEDTUNE_NETWORK_LOG": str(NETWORK_LOG)}


def command_env() -> dict[str, str]:
    """A user's environment: no HF_HUB_OFFLINE (importing medtune set it in this process), the network guard."""
    user = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    return {**user, **OFFLINE, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(repo: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True, env=command_env())
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    assert not NETWORK_LOG.exists(), f"{' '.join(args)} tried to use the network:\n{NETWORK_LOG.read_text()}"
    return result.stdout + result.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def dvc(repo: Path, *args: str) -> str:
    return run(repo, sys.executable, "-m", "dvc", *args)


def set_root_config(repo: Path, **values) -> None:
    """Edit conf/config.yaml (keys after `_self_` override the groups) and recompose params.yaml, as a user would."""
    path = repo / "conf" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in values.items():
        if key == "model":
            config["defaults"][0] = {"model": value}
        else:
            config[key] = OmegaConf.to_container(OmegaConf.merge(config.get(key, {}), value))
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    compose_params(repo)


def set_task_config(repo: Path, task: str, values: dict) -> None:
    """Edit conf/task/<task>.yaml, where a task's settings live (so `-S 'tasks=[...]'` can leave the task out)."""
    path = repo / "conf" / "task" / f"{task}.yaml"
    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(OmegaConf.to_container(OmegaConf.merge(config, values)), sort_keys=False))
    compose_params(repo)


def commit_workspace(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def make_repo(repo: Path) -> Path:
    """A git repo with the project's code, config, the first 40 records of each sample data file and the sample
    harness task, set to TINY."""
    for name in ("conf", "stages", "src", "dvc.yaml", ".dvcignore", ".gitignore"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, repo / name)
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "data" / "raw").mkdir(parents=True)
    for raw in (ROOT / "data" / "raw").glob("*.jsonl"):
        (repo / "data" / "raw" / raw.name).write_text("".join(raw.read_text().splitlines(keepends=True)[:40]))
    shutil.copytree(ROOT / "data" / "harness", repo / "data" / "harness")  # the harness stage's offline sample task
    shutil.copytree(ROOT / "data" / "preference", repo / "data" / "preference")  # where given preference pairs go
    set_root_config(repo, **TINY)
    for task in ("qa", "simplification", "terminology"):
        set_task_config(repo, task, TINY_GENERATIVE_TASK)
    run(repo, "git", "init", "-q")
    commit_workspace(repo, "tiny project")
    return repo


TASKS = ("qa", "simplification", "terminology", "ner")
PER_TASK = ("prepare", "tokenize", "train", "merge", "evaluate")


# The scratch file DVC writes beside an output to learn which link types the folder takes (dvc_objects' tmp_fname,
# `.<16 random bytes, base64>.tmp`) and deletes at once: a SIGKILL of DVC itself in between leaves it. It is DVC's,
# not an output, and no stage reads it.
DVC_SCRATCH = re.compile(r"\.[\w-]{22}\.tmp")


def build_outputs(root: Path) -> dict[str, bytes]:
    """Every file the pipeline wrote, by path: data, models and metrics. Left out: *_resources.json (wall-clock time
    and memory), leftovers of killed writes (`.*.tmp-*`) and DVC's scratch files (`DVC_SCRATCH`)."""
    files = [p for top in ("data/prepared", "data/tokenized", "models", "metrics") for p in (root / top).rglob("*")]
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in files
        if p.is_file()
        and not p.name.endswith("_resources.json")
        and ".tmp-" not in str(p)
        and not DVC_SCRATCH.fullmatch(p.name)
    }


def fresh_clone(repo: Path, folder: Path) -> Path:
    """A git clone of the project: its code and config, none of its outputs, no DVC cache to restore them from."""
    run(folder.parent, "git", "clone", "-q", str(repo), str(folder))
    return folder
