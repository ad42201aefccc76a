"""Reading and atomically writing stage outputs.

Every stage output is written to a temporary sibling and renamed into place, so a killed stage never
leaves a file or folder that DVC or the next stage would take as a valid result. A SIGKILL leaves the temporary
sibling behind (`.name.tmp-*`, which no stage reads); the next write of the same path deletes it.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medtune.errors import ResourceError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_free_space(path: str | Path, needed_bytes: float, what: str) -> None:
    """Fail before writing `what` (about `needed_bytes`, plus a 10% margin) to `path` when its disk has less free:
    a disk that fills up in the middle of a multi-GB save fails late, with an error that does not say why."""
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed_bytes * 1.1:
        raise ResourceError(
            f"{what} needs about {_size(needed_bytes)} in {path}, but its disk has {_size(free)} free. Free some "
            "space (`dvc gc --workspace` drops cached outputs no commit uses) or move the project."
        )
    log.info("%s: about %s to write, %s free", what, _size(needed_bytes), _size(free))


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _temporary_sibling(path: Path) -> Path:
    """A new name next to `path` for its temporary copy, after deleting what a killed earlier write left behind.
    Created with plain mkdir/open rather than tempfile's, so outputs get the umask's permissions (tempfile's are
    owner-only: 0600 files, 0700 folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"


def dumps_json(obj: Any) -> str:
    """Stable, diff-friendly JSON (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows with the same keys as a CSV file with a header (DVC plots read these)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file that medtune wrote itself (raw user data goes through `medtune.data`)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
