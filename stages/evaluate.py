"""Stage `evaluate@<task>`: base vs fine-tuned on the test split, side by side.

Reads params: seed, eval, judge, tasks.<task>.{kind,labels,system,prompt_template,generation,metrics}.
    python -m stages.evaluate qa data/prepared/qa data/tokenized/qa models/base/smollm2-135m models/merged/qa metrics/qa
Writes metrics/<task>/eval.json `{"base": {...}, "finetuned": {...}, "difference": {...}, "bootstrap": {...}}` (each
metric with its bootstrap interval over the test examples; the difference fine-tuned minus base with its paired
interval), examples.jsonl (each example's metric statistics, what `medtune report`
compares example by example), eval_machine.json (the hardware the timings in eval_resources.json were
made on), samples.jsonl (inputs, reference, both models' outputs), scores.csv (the
base-vs-fine-tuned bar plot) and, for token classification, confusion.csv.
  sft: perplexity of the reference answers, the task's text metrics on greedy generations, ms per token, and the
  forgetting check on the general set (eval.general: eval.json `general`, general_samples.jsonl; medtune.forgetting).
  token_classification: seqeval strict IOB2 precision/recall/F1, micro and per type; the base model has an
  untrained head (the floor).
Stage `evaluate_aligned@<task>` runs it too, with `--names finetuned aligned`: the SFT model against the aligned one
(the align stage's), into metrics/<task>/aligned/.
"""

import argparse
from pathlib import Path

from medtune.config import load_params, task_config
from medtune.console import run_main
from medtune.evaluation import GeneralSet, evaluate_generation, evaluate_tagging
from medtune.forgetting import general_examples, read_general_set
from medtune.io import read_jsonl, write_csv, write_json, write_jsonl
from medtune.machine import describe
from medtune.modeling import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("tokenized_dir", type=Path)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("merged_dir", type=Path)
    parser.add_argument("metrics_dir", type=Path)
    parser.add_argument("--names", nargs=2, default=["base", "finetuned"], help="what to call the two models")
    args = parser.parse_args()

    params = load_params()
    task = task_config(params, args.task)
    records = read_jsonl(args.prepared_dir / "test.jsonl")[: params.eval.max_examples]
    kept_ids = {r["id"] for r in records}
    examples = [e for e in read_jsonl(args.tokenized_dir / "test.jsonl") if e["id"] in kept_ids]
    models = dict(zip(args.names, (args.base_dir, args.merged_dir), strict=True))
    if task.kind == "token_classification":
        done = evaluate_tagging(task, records, examples, models, params.eval, params.seed)
    else:
        judge = params.judge if params.judge.enabled and args.task in params.judge.tasks else None
        tokenizer = load_tokenizer(args.base_dir)
        general = None
        if params.eval.general.max_examples != 0:
            path = Path(params.eval.general.path)
            items = read_general_set(path, params.eval.general.max_examples)
            general = GeneralSet(items, general_examples(tokenizer, items, task.max_length, path))
        done = evaluate_generation(task, records, examples, tokenizer, models, params.eval, params.seed, judge, general)
    write_json(args.metrics_dir / "eval.json", done.results)
    write_json(args.metrics_dir / "eval_resources.json", done.speed)
    write_json(args.metrics_dir / "eval_machine.json", describe())
    write_jsonl(args.metrics_dir / "examples.jsonl", done.examples)
    write_jsonl(args.metrics_dir / "samples.jsonl", done.samples)
    write_jsonl(args.metrics_dir / "general_samples.jsonl", done.general_samples)
    for name, rows in done.plots.items():
        write_csv(args.metrics_dir / name, rows)


if __name__ == "__main__":
    run_main(main)
