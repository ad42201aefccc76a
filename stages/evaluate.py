"""Stage `evaluate@<task>`: base vs fine-tuned on the test split, side by side.

Reads params: eval, judge, tasks.<task>.{system,prompt_template,generation,metrics}.
    python -m stages.evaluate qa data/prepared/qa data/tokenized/qa models/base/smollm2-135m models/merged/qa metrics/qa
Writes metrics/<task>/eval.json `{"base": {...}, "finetuned": {...}}` (perplexity of the reference answers,
the task's text metrics on greedy generations, ms per generated token) and samples.jsonl.
"""

import argparse
from pathlib import Path

from medtune.config import load_params, task_config
from medtune.console import log, run_main
from medtune.generation import generate, perplexity
from medtune.io import read_jsonl, write_json, write_jsonl
from medtune.judge import judge_simplifications
from medtune.metrics import score_texts
from medtune.modeling import load_causal_lm, load_tokenizer
from medtune.tasks import render_prompt, user_message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("tokenized_dir", type=Path)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("merged_dir", type=Path)
    parser.add_argument("metrics_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    task = task_config(params, args.task)
    records = read_jsonl(args.prepared_dir / "test.jsonl")[: params.eval.max_examples]
    kept_ids = {r["id"] for r in records}
    examples = [e for e in read_jsonl(args.tokenized_dir / "test.jsonl") if e["id"] in kept_ids]
    tokenizer = load_tokenizer(args.base_dir)
    prompts = [render_prompt(tokenizer, task.system, user_message(task.prompt_template, r["prompt"])) for r in records]
    sources, references = [r["prompt"] for r in records], [r["response"] for r in records]

    results, outputs = {}, {}
    for name, model_dir in (("base", args.base_dir), ("finetuned", args.merged_dir)):
        log.info("Evaluating the %s model (%s) on %d test examples", name, model_dir, len(records))
        model = load_causal_lm(model_dir)
        gens = generate(model, tokenizer, prompts, task.generation.max_new_tokens, params.eval.batch_size)
        outputs[name] = gens.texts
        results[name] = {
            "perplexity": perplexity(model, examples, params.eval.batch_size, tokenizer.pad_token_id),
            **score_texts(task.metrics, sources, gens.texts, references),
            "ms_per_token": round(gens.ms_per_token, 2),
            "generated_tokens": gens.new_tokens,
            "examples": len(records),
        }
        if params.judge.enabled and args.task in params.judge.tasks:
            results[name].update(judge_simplifications(params.judge, sources, gens.texts))
        log.info("%s: %s", name, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[name].items()})
    write_json(args.metrics_dir / "eval.json", results)
    write_jsonl(
        args.metrics_dir / "samples.jsonl",
        (
            {"id": r["id"], "source": r["prompt"], "reference": r["response"], "base": b, "finetuned": f}
            for r, b, f in zip(records, outputs["base"], outputs["finetuned"], strict=True)
        ),
    )


if __name__ == "__main__":
    run_main(main)
