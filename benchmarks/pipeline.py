"""Benchmark: the pipeline's own overhead, and the default run's wall time per stage.

    python benchmarks/pipeline.py                  # no-op `dvc repro` in this checkout (median of 5)
    python benchmarks/pipeline.py --full           # plus: the whole default pipeline in a fresh clone, per stage
    python benchmarks/pipeline.py --full --set model=tiny-random --set 'tasks=[qa]' --set train.max_steps=2
                                                   # a quick run of the same thing (the smoke test)

--full clones the committed state of this repository into a temporary folder (empty DVC cache, base-model
conversion included), optionally recomposes params.yaml there with `--set` Hydra overrides, and runs
`dvc repro --force` (--keep DIR keeps the clone: its outputs, dvc.lock and DVC cache). --force, because the builds
are reproducible: once training has rebuilt the committed merged models byte for byte, plain `dvc repro` would
find the committed metrics up to date and skip evaluate. A stage's wall time
runs from DVC's "Running stage" line to the next stage's.
Prints a table and writes the figures as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from medtune.config import compose_params

ROOT = Path(__file__).resolve().parents[1]
SETUP_STAGES = ("base", "prepare", "tokenize")  # the share the issue asks to keep small


def dvc(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def noop_repro_seconds(cwd: Path, runs: int) -> float:
    """Median wall time of `dvc repro` when nothing changed."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        process = dvc(cwd, "repro")
        output = process.communicate()[0]
        if process.returncode != 0 or "Running stage" in output:
            raise SystemExit(f"`dvc repro` in {cwd} is not a no-op here; run it once first:\n{output}")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_repro(cwd: Path) -> dict[str, float]:
    """Run every stage (`dvc repro --force`), streaming its output; a stage's time runs from its "Running stage"
    line to the next one (or the end), so it includes DVC's own work for it: hashing and caching its outputs,
    updating dvc.lock."""
    seconds: dict[str, float] = {}
    current, started = None, 0.0
    process = dvc(cwd, "repro", "--force")
    for line in process.stdout:
        sys.stdout.write(line)
        if match := re.match(r"Running stage '([^']+)'", line):
            now = time.perf_counter()
            if current is not None:
                seconds[current] = now - started
            current, started = match.group(1), now
    if process.wait() != 0:
        raise SystemExit("`dvc repro` failed (output above)")
    if current is not None:
        seconds[current] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="time the whole pipeline in a fresh clone")
    parser.add_argument("--set", action="append", default=[], help="a Hydra override for the clone's params.yaml")
    parser.add_argument("--runs", type=int, default=5, help="no-op runs to take the median of")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="clone into this new folder and keep it (its outputs and dvc.lock)")
    args = parser.parse_args()

    result: dict = {}
    console = Console()
    if args.full:
        with tempfile.TemporaryDirectory() as tmp:
            clone = args.keep or Path(tmp) / "medtune"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            if args.set:
                compose_params(clone, args.set)
            start = time.perf_counter()
            stages = timed_repro(clone)
            result["full_repro_s"] = round(time.perf_counter() - start, 1)
            result["stages_s"] = {name: round(s, 1) for name, s in stages.items()}
            result["noop_repro_s"] = round(noop_repro_seconds(clone, args.runs), 2)
        setup = sum(s for name, s in stages.items() if name.split("@")[0] in SETUP_STAGES)
        result["setup_share"] = round(setup / result["full_repro_s"], 3)
        table = Table(title=f"dvc repro in a fresh clone{' with ' + ' '.join(args.set) if args.set else ''}")
        table.add_column("stage")
        table.add_column("wall time", justify="right")
        for name, s in stages.items():
            table.add_row(name, f"{s:.1f} s")
        table.add_row("[bold]total[/bold]", f"[bold]{result['full_repro_s'] / 60:.1f} min[/bold]")
        console.print(table)
        console.print(f"base + prepare + tokenize: {100 * result['setup_share']:.1f}% of the run")
    else:
        result["noop_repro_s"] = round(noop_repro_seconds(ROOT, args.runs), 2)
    console.print(f"no-op `dvc repro`: {result['noop_repro_s']:.2f} s (median of {args.runs})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
