"""Benchmark: token classification in batches of corpus order against medtune's length-sorted batches.

Both runs go through `medtune.generation.predict_tags`, the function evaluate and predict use, on the same tokenized
windows (a task's test split after `dvc repro tokenize@<task>`, or random windows for the tiny model): once a batch
at a time in the order the split lists them (each batch padded to its longest window, as before), once all windows in
one call (sorted by length into batches). The tags must be identical: the order is only allowed to change speed.

    python benchmarks/tagging_throughput.py --task ner                         # the base model's untrained head
    python benchmarks/tagging_throughput.py --task ner --model models/merged/ner --windows 960
    python benchmarks/tagging_throughput.py --model tiny --windows 20 --json out.json       # smoke

Prints windows/s of both and the ratio, and the padded tokens each computes; --json writes the same figures.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from medtune.config import WeightsConfig, conf_section, load_params, task_config
from medtune.generation import predict_tags
from medtune.io import read_jsonl
from medtune.modeling import build_base_model, load_token_classifier

TINY_MODEL = "conf/model/tiny-random.yaml"
TINY_LABELS = ["O", "B-Disease", "I-Disease"]


def tiny_windows(count: int, seed: int = 0) -> list[dict]:
    """Random windows of 4 to 120 tokens, every token a word start."""
    rng = random.Random(seed)
    windows = []
    for i in range(count):
        ids = [rng.randrange(3, 200) for _ in range(rng.randrange(4, 121))]
        windows.append({"id": str(i), "window": 0, "input_ids": ids, "labels": [0] * len(ids)})
    return windows


def padded_tokens(windows: list[dict], batch_size: int) -> int:
    """Tokens the model computes when `windows` are batched in this order, each batch padded to its longest."""
    lengths = [len(w["input_ids"]) for w in windows]
    return sum(
        max(lengths[b : b + batch_size]) * len(lengths[b : b + batch_size]) for b in range(0, len(lengths), batch_size)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="ner", help="the task whose tokenized test split is tagged")
    parser.add_argument("--model", default=None, help="a model folder (default: the base model), or `tiny`")
    parser.add_argument("--windows", type=int, default=960, help="the first N windows of the split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            model_dir, labels = Path(tmp), TINY_LABELS
            build_base_model(conf_section(WeightsConfig, TINY_MODEL, "weights"), model_dir)
            windows = tiny_windows(args.windows)
        else:
            params = load_params()
            task = task_config(params, args.task)
            model_dir, labels = Path(args.model or f"models/base/{params.model.name}"), list(task.labels)
            windows = read_jsonl(Path("data/tokenized") / args.task / "test.jsonl")[: args.windows]
        model = load_token_classifier(model_dir, labels, attention=None).eval()
        ids = sorted({w["id"] for w in windows})
        start = time.perf_counter()
        in_order: dict[str, list[str]] = {}
        for b in range(0, len(windows), args.batch_size):
            batch = windows[b : b + args.batch_size]
            batch_ids = sorted({w["id"] for w in batch})
            for i, tags in zip(batch_ids, predict_tags(model, batch, labels, args.batch_size, batch_ids), strict=True):
                in_order.setdefault(i, []).extend(tags)  # a sentence's windows may straddle two batches
        corpus_s = time.perf_counter() - start
        start = time.perf_counter()
        sorted_tags = dict(zip(ids, predict_tags(model, windows, labels, args.batch_size, ids), strict=True))
        sorted_s = time.perf_counter() - start

    useful = sum(len(w["input_ids"]) for w in windows)
    by_length = sorted(windows, key=lambda w: len(w["input_ids"]))
    result = {
        "model": args.model or "base",
        "windows": len(windows),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "tokens": useful,
        "padded_tokens": {
            "corpus_order": padded_tokens(windows, args.batch_size),
            "sorted": padded_tokens(by_length, args.batch_size),
        },  # fmt: skip
        "seconds": {"corpus_order": round(corpus_s, 2), "sorted": round(sorted_s, 2)},
        "windows_per_s": {
            "corpus_order": round(len(windows) / corpus_s, 1),
            "sorted": round(len(windows) / sorted_s, 1),
        },
        "ratio": round(corpus_s / sorted_s, 2),
        "identical_tags": all(in_order[i] == sorted_tags[i] for i in ids),
    }
    console = Console()
    for name in ("corpus_order", "sorted"):
        console.print(
            f"{name}: {result['windows_per_s'][name]} windows/s, {result['padded_tokens'][name]:,} padded tokens "
            f"for {useful:,} ({result['padded_tokens'][name] / useful:.2f}x)"
        )
    console.print(f"ratio {result['ratio']}x; identical tags: {result['identical_tags']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
