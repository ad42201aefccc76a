"""Rebuilds of the qa and ner chains (both kinds of model head) on the tiny model, from a build of their own: a
second clean build gives the same bytes, and a build killed as each output is written ends with the same bytes.
Byte identity holds on one machine with one set of library versions: bf16 kernels differ between CPUs (AMX or
AVX-512 bf16 only) and GPUs, so a build elsewhere differs within the metrics' intervals (docs/metrics.md)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvc_project import DVC_SCRATCH, build_outputs, command_env, dvc, fresh_clone, make_repo

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project, built up to the evaluation of qa and ner."""
    repo = make_repo(tmp_path_factory.mktemp("medtune-repo"))
    dvc(repo, "repro", "evaluate@qa", "evaluate@ner")
    return repo


def test_a_second_clean_build_on_the_same_machine_and_library_versions_is_byte_identical(repo, tmp_path):
    """Seeds everywhere (split, LoRA and head init, dataloader order): a rebuild gives the same bytes."""
    clone = fresh_clone(repo, tmp_path / "again")
    dvc(clone, "repro", "evaluate@qa", "evaluate@ner")  # both kinds of head

    first, second = build_outputs(repo), build_outputs(clone)
    assert {"models/adapters/ner/adapter_model.safetensors", "metrics/ner/eval.json"} <= second.keys()
    differing = [path for path in second if second[path] != first[path]]
    assert differing == []


def output_key(path: str) -> str:
    """The output a path belongs to: `models/adapters/ner/x` -> `models/adapters/ner`, a temporary sibling
    `metrics/ner/.eval.json.tmp-1a2b` -> `metrics/ner/eval.json`; in the checkpoints folder, each checkpoint."""
    parts = path.split("/")[: 4 if path.startswith("models/checkpoints/") else 3]
    parts[-1] = re.sub(r"^\.(.+)\.tmp-.*$", r"\1", parts[-1])
    return "/".join(parts)


def written_paths(clone: Path) -> dict[str, tuple[int, int]]:
    """Files and folders under the output locations of the ner chain, each with its inode and (files) modification
    time: an output DVC deletes and the stage writes again is a new one. os.walk: the stages rename folders while it
    looks, and it skips what vanished. DVC's scratch files are not outputs (`DVC_SCRATCH`)."""
    paths = {}
    for top in ("data/prepared", "data/tokenized", "models", "metrics/ner"):
        for folder, dirs, files in os.walk(clone / top):
            for name in dirs + [f for f in files if not DVC_SCRATCH.fullmatch(f)]:
                with contextlib.suppress(FileNotFoundError):
                    stat = (Path(folder) / name).stat()
                    changed = stat.st_mtime_ns if name in files else 0  # a folder's changes with every file in it
                    paths[str((Path(folder) / name).relative_to(clone))] = (stat.st_ino, changed)
    return paths


def kill_when_an_output_starts(clone: Path, killed: set[str], timeout_s: float = 300) -> str | None:
    """Run `dvc repro evaluate@ner` and SIGKILL it (and the stage it runs) the moment an output not in `killed`
    starts being written (its temporary sibling, or the output itself, appears). Returns that output, or None when
    the build finished first."""
    before = written_paths(clone)
    build = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "evaluate@ner"], cwd=clone, env=command_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while build.poll() is None and time.monotonic() < deadline:
        now = written_paths(clone)
        fresh = {output_key(p) for p in now if now[p] != before.get(p) and p.count("/") >= 2} - killed
        if fresh:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
            return min(fresh)
        time.sleep(0.001)
    assert build.returncode == 0, "the build failed or hung"
    return None


def incomplete_outputs(clone: Path, clean: dict[str, bytes]) -> list[str]:
    """Outputs that exist in `clone` (a folder, even an empty one, or a file) but are not exactly the clean build's:
    a file missing from a folder, or other bytes. The checkpoints folder is in progress by design."""
    now = build_outputs(clone)
    present = {output_key(p) for p in written_paths(clone) if ".tmp-" not in p and p.count("/") >= 2}

    def files(build: dict[str, bytes], key: str) -> dict[str, bytes]:
        return {path: data for path, data in build.items() if output_key(path) == key}

    return sorted(k for k in present if not k.startswith("models/checkpoints/") and files(now, k) != files(clean, k))


def test_a_build_killed_at_every_write_leaves_nothing_partial_and_ends_byte_identical_on_this_machine(repo, tmp_path):
    """SIGKILL `dvc repro` (and its stage) as each output starts being written, then rerun: after every kill each
    output that exists is complete (equal to a clean build's), and the build that finally finishes is the clean one.
    Training is also killed in the middle of saving a checkpoint, which the rerun must not resume from."""
    clone, clean, killed = fresh_clone(repo, tmp_path / "killed"), build_outputs(repo), set()
    while (output := kill_when_an_output_starts(clone, killed)) is not None:
        killed.add(output)
        assert incomplete_outputs(clone, clean) == []
        assert len(killed) < 30

    assert {"models/base/tiny-random", "data/tokenized/ner", "models/adapters/ner", "metrics/ner/eval.json"} <= killed
    assert any(output.startswith("models/checkpoints/ner/checkpoint-") for output in killed)
    finished = build_outputs(clone)
    assert [path for path in finished if finished[path] != clean[path]] == []
    assert finished.keys() >= {p for p in clean if "/ner/" in p or p.startswith("models/base/")}
