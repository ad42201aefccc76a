"""Benchmark: generation one prompt at a time against medtune's batched generation (evaluate, predict).

Both runs go through `medtune.generation.generate`, the function evaluate and predict use, on the same prompts
(a task's test split, or its raw data before `dvc repro`, in the model's chat template) with greedy decoding;
only the batch size differs. Tokens are counted up to and including each answer's end-of-turn token, so the
padding a batch keeps generating after an answer has ended does not count.

    python benchmarks/generate_throughput.py                        # models/merged/qa on data/prepared/qa
    python benchmarks/generate_throughput.py --model tiny --prompts 4 --max-new-tokens 4 --json out.json   # smoke

Prints one-at-a-time and batched generated tokens/s, the ratio, and whether the texts are identical (they must
be: batching is only allowed to change speed). Writes the same figures as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from medtune import data
from medtune.config import WeightsConfig, conf_section, load_params, task_config
from medtune.generation import generate
from medtune.io import read_jsonl
from medtune.modeling import build_base_model, load_causal_lm, load_tokenizer
from medtune.tasks import render_record_prompt

TINY_MODEL = "conf/model/tiny-random.yaml"  # the tiny random Llama (benchmarks run in the project root)


def prompts_for(task_name: str, tokenizer, count: int) -> list[str]:
    """`count` prompts of a task (its test split when prepared, else its raw data), as evaluate renders them."""
    task = task_config(load_params(), task_name)
    test_split = Path("data/prepared") / task_name / "test.jsonl"
    if test_split.is_file():
        records = read_jsonl(test_split)
    else:
        records, _ = data.to_task_records(data.read_source(task.data, f"tasks.{task_name}.data").splits["train"], task)
    records = (records * (count // len(records) + 1))[:count]
    return [render_record_prompt(tokenizer, r, task.system, task.prompt_template) for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/merged/qa", help="a model folder, or `tiny` (random, smoke test)")
    parser.add_argument("--task", default="qa", help="the task whose test prompts are generated from")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model)
        if args.model == "tiny":
            model_dir = Path(tmp)
            build_base_model(conf_section(WeightsConfig, TINY_MODEL, "weights"), model_dir)
        model, tokenizer = load_causal_lm(model_dir), load_tokenizer(model_dir, padding_side="left")
        prompts = prompts_for(args.task, tokenizer, args.prompts)
        single = generate(model, tokenizer, prompts, args.max_new_tokens, batch_size=1)
        batched = generate(model, tokenizer, prompts, args.max_new_tokens, batch_size=args.batch_size)

    rates = {name: g.new_tokens / g.seconds for name, g in (("one at a time", single), ("batched", batched))}
    result = {
        "model": args.model,
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "threads": torch.get_num_threads(),
        "one_at_a_time": {"tokens": single.new_tokens, "seconds": round(single.seconds, 2)},
        "batched": {"tokens": batched.new_tokens, "seconds": round(batched.seconds, 2)},
        "tokens_per_s": {name: round(rate, 1) for name, rate in rates.items()},
        "ratio": round(rates["batched"] / rates["one at a time"], 2),
        "identical_texts": single.texts == batched.texts,
    }
    table = Table(title=f"greedy generation, {len(prompts)} {args.task} test prompts, {args.model}")
    for column in ("mode", "generated tokens", "seconds", "tokens/s"):
        table.add_column(column, justify="right")
    for name, g in (("one at a time", single), (f"batched ({args.batch_size})", batched)):
        table.add_row(name, str(g.new_tokens), f"{g.seconds:.1f}", f"{g.new_tokens / g.seconds:.1f}")
    console = Console()
    console.print(table)
    console.print(f"ratio {result['ratio']}x; identical texts: {result['identical_texts']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
