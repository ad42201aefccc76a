"""Stage outputs appear whole or not at all, with the permissions any other file of the user gets."""

from __future__ import annotations

import os
import stat

import pytest

from medtune.io import atomic_dir, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_atomic_write_replaces_the_file_and_follows_the_umask(tmp_path, umask_022):
    target = tmp_path / "metrics" / "eval.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert mode(target) == 0o644  # tempfile.mkstemp would make it 0600: unreadable for the rest of the team
    assert os.listdir(target.parent) == ["eval.json"]


def test_a_failed_folder_write_keeps_the_old_folder_and_leaves_nothing_else(tmp_path, umask_022):
    out = tmp_path / "prepared"
    with atomic_dir(out) as tmp:
        (tmp / "train.jsonl").write_text("first\n")
    assert mode(out) == 0o755
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "train.jsonl").write_text("half")
        raise RuntimeError("killed halfway")
    assert (out / "train.jsonl").read_text() == "first\n"
    assert os.listdir(tmp_path) == ["prepared"]


def test_a_leftover_of_a_killed_write_is_deleted_by_the_next_write(tmp_path):
    (tmp_path / ".eval.json.tmp-1a2b").write_text("partial")
    (tmp_path / ".prepared.tmp-3c4d").mkdir()
    atomic_write_text(tmp_path / "eval.json", "{}")
    with atomic_dir(tmp_path / "prepared"):
        pass
    assert sorted(os.listdir(tmp_path)) == ["eval.json", "prepared"]
