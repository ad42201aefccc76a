"""Benchmark: the faults of sampled answers, SFT model against its preference-tuned (aligned) model.

evaluate_aligned scores one greedy answer per test prompt; on a small test split (22 prompts in the sample
simplification data) its intervals are wide. This samples `--samples` answers per test prompt from each model (seeded,
the pairs stage's sampling settings: align.pairs.temperature and top_p), scores each with the task's own checks
(medtune.preference, the faults the pairs were ranked by) and compares the faults per answer of the two models with
a paired bootstrap over the prompts (eval.bootstrap_samples resamples, seeded).

    python benchmarks/align_faults.py --task simplification                 # models/merged and models/aligned
    python benchmarks/align_faults.py --model tiny --samples 2 --json out.json   # smoke: the tiny model twice

Prints, per fault and for the quantity faults together (altered + invented), each model's faults per answer and the
difference with its interval; --json writes the same figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from medtune.bootstrap import resample_counts
from medtune.config import WeightsConfig, conf_section, load_params, task_config
from medtune.generation import sample
from medtune.io import read_jsonl
from medtune.modeling import build_base_model, load_causal_lm, load_tokenizer
from medtune.preference import FAULTS, score_candidates
from medtune.tasks import render_record_prompt

QUANTITY_FAULTS = ("quantities_altered", "quantities_invented")
# What each fault counts (medtune.preference.FAULTS is keyed by the metric that checks it: a `preserved` metric's
# fault is a dropped item)
LABELS = {
    "quantities_preserved": "quantities dropped",
    "quantities_altered": "quantities altered",
    "quantities_invented": "quantities invented",
    "medications_preserved": "medicines dropped",
    "medications_invented": "medicines invented",
    "format_adherence": "format broken",
    "disclaimer_rate": "disclaimer missing",
    "quantities_altered+invented": "quantities altered + invented",
}
TINY_RECORDS = [
    {
        "id": f"s-{i}",
        "prompt": f"Take {n} mg of paracetamol every {h} hours.",
        "response": f"Take {n} mg every {h} hours.",
    }
    for i, (n, h) in enumerate([(500, 6), (1000, 8), (250, 4)])
]


def fault_counts(model_dir: Path, records: list[dict], args: argparse.Namespace) -> tuple[np.ndarray, float]:
    """(prompts x faults) counts of the sampled answers' faults, and the seconds sampling took."""
    params = load_params(args.params)
    task, pairs = task_config(params, args.task), params.align.pairs
    model, tokenizer = load_causal_lm(model_dir), load_tokenizer(model_dir)
    prompts = [render_record_prompt(tokenizer, r, task.system, task.prompt_template) for r in records]
    sampling = {"temperature": pairs.temperature, "top_p": pairs.top_p}
    start = time.perf_counter()
    answers = sample(
        model, tokenizer, prompts, args.samples, task.generation.max_new_tokens, params.eval.batch_size, sampling,
        params.seed,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    names = fault_names(list(task.metrics))
    counts = np.zeros((len(records), len(names)))
    for i, (record, texts) in enumerate(zip(records, answers, strict=True)):
        for score in score_candidates(list(task.metrics), record["prompt"], record["response"], texts):
            counts[i] += [score.faults.get(name, 0) for name in names]
    return counts, seconds


def fault_names(metrics: list[str]) -> list[str]:
    return [name for name in metrics if name in FAULTS]


def compare(sft: np.ndarray, aligned: np.ndarray, samples: int, names: list[str], params_file: str) -> dict:
    """Per fault (and the quantity faults together): faults per answer of each model, the difference and its paired
    bootstrap interval over the prompts."""
    params = load_params(params_file)
    columns = {name: [i] for i, name in enumerate(names)}
    together = [names.index(n) for n in QUANTITY_FAULTS if n in names]
    if together:
        columns["quantities_altered+invented"] = together
    counts = resample_counts(len(sft), params.eval.bootstrap_samples, params.seed)  # (resamples, prompts)
    tail = 100 * (1 - params.eval.confidence) / 2
    figures = {}
    for name, index in columns.items():
        a, b = sft[:, index].sum(axis=1), aligned[:, index].sum(axis=1)
        deltas = (counts @ b - counts @ a) / (counts.sum(axis=1) * samples)
        low, high = np.percentile(deltas, [tail, 100 - tail])
        per_answer = len(sft) * samples
        figures[name] = {
            "sft": a.sum() / per_answer,
            "aligned": b.sum() / per_answer,
            "difference": (b.sum() - a.sum()) / per_answer,
            "low": float(low),
            "high": float(high),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="simplification")
    parser.add_argument("--model", choices=["pipeline", "tiny"], default="pipeline")
    parser.add_argument("--sft", type=Path, help="default: models/merged/<task>")
    parser.add_argument("--aligned", type=Path, help="default: models/aligned/<task>")
    parser.add_argument("--samples", type=int, default=8, help="answers sampled per test prompt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            build_base_model(conf_section(WeightsConfig, "conf/model/tiny-random.yaml", "weights"), Path(tmp))
            sft_dir = aligned_dir = Path(tmp)
            records = TINY_RECORDS
        else:
            sft_dir = args.sft or Path("models/merged") / args.task
            aligned_dir = args.aligned or Path("models/aligned") / args.task
            records = read_jsonl(Path("data/prepared") / args.task / "test.jsonl")
        sft, sft_s = fault_counts(sft_dir, records, args)
        aligned, aligned_s = fault_counts(aligned_dir, records, args)
    names = fault_names(list(task_config(load_params(args.params), args.task).metrics))
    figures = compare(sft, aligned, args.samples, names, args.params)
    table = Table(title=f"{args.task}: faults per sampled answer ({len(records)} test prompts x {args.samples})")
    for column in ("fault", "SFT", "aligned", "aligned - SFT", "interval"):
        table.add_column(column, justify="left" if column == "fault" else "right")
    for name, f in figures.items():
        table.add_row(LABELS[name], f"{f['sft']:.3f}", f"{f['aligned']:.3f}", f"{f['difference']:+.3f}",
                      f"[{f['low']:+.3f}, {f['high']:+.3f}]")  # fmt: skip
    console = Console(width=160)
    console.print(table)
    console.print(f"sampling: SFT {sft_s:.0f} s, aligned {aligned_s:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"prompts": len(records), "samples": args.samples, "faults": figures}, indent=2)
        )


if __name__ == "__main__":
    main()
