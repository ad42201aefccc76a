"""Base vs fine-tuned evaluation on a task's test split, one function per kind of model head.

Each returns `(results, samples, plots, speed)`: results is `{"base": {...}, "finetuned": {...}}` for eval.json,
samples are side-by-side rows for samples.jsonl, plots maps a CSV file name to its rows, and speed holds the
wall-clock measurements for eval_resources.json (apart, so that eval.json reproduces byte for byte).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from medtune.generation import generate, perplexity, predict_tags
from medtune.judge import judge_simplifications
from medtune.metrics import score_texts, seqeval_scores, tag_confusion
from medtune.modeling import device, load_causal_lm, load_token_classifier
from medtune.tasks import render_record_prompt

log = logging.getLogger(__name__)
Models = dict[str, Path]  # {"base": models/base/<model>, "finetuned": models/merged/<task>}


def evaluate_generation(
    task: Any, records: list[dict], examples: list[dict], tokenizer: Any, models: Models, eval_cfg: Any, judge: Any
) -> tuple[dict, list[dict], dict, dict]:
    """Perplexity of the references, greedy generations scored by the task's metrics, optional judge."""
    prompts = [render_record_prompt(tokenizer, r, task.system, task.prompt_template) for r in records]
    sources, references = [r["prompt"] for r in records], [r["response"] for r in records]
    results, outputs, speed = {}, {}, {}
    for name, model_dir in models.items():
        log.info("Evaluating the %s model (%s) on %d test examples", name, model_dir, len(records))
        model = load_causal_lm(model_dir)
        gens = generate(model, tokenizer, prompts, task.generation.max_new_tokens, eval_cfg.batch_size)
        outputs[name], speed[name] = gens.texts, {"ms_per_token": round(gens.ms_per_token, 2)}
        results[name] = {
            "perplexity": perplexity(model, examples, eval_cfg.batch_size, tokenizer.pad_token_id),
            **score_texts(task.metrics, sources, gens.texts, references),
            "generated_tokens": gens.new_tokens,
            "examples": len(records),
        }
        if judge is not None:
            results[name].update(judge_simplifications(judge, sources, gens.texts))
        log.info("%s: %s", name, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[name].items()})
    samples = [
        {"id": r["id"], "source": r["prompt"], "reference": r["response"], "base": b, "finetuned": f}
        for r, b, f in zip(records, outputs["base"], outputs["finetuned"], strict=True)
    ]
    return results, samples, {"scores.csv": _score_rows(results)}, speed


def evaluate_tagging(
    task: Any, records: list[dict], examples: list[dict], models: Models, eval_cfg: Any, seed: int
) -> tuple[dict, list[dict], dict, dict]:
    """seqeval entity scores (strict IOB2) of the fine-tuned tagger and of the base model with an untrained head
    (the floor), plus the fine-tuned model's tag confusion counts."""
    gold = [r["tags"] for r in records]
    results, predicted, speed = {}, {}, {}
    for name, model_dir in models.items():
        log.info("Tagging %d test sentences with the %s model (%s)", len(records), name, model_dir)
        model = load_token_classifier(model_dir, list(task.labels), seed).to(device()).eval()
        start = time.perf_counter()
        predicted[name] = predict_tags(
            model, examples, list(task.labels), eval_cfg.batch_size, [r["id"] for r in records]
        )
        speed[name] = {"ms_per_sentence": round(1000 * (time.perf_counter() - start) / max(len(records), 1), 2)}
        results[name] = {**seqeval_scores(gold, predicted[name]), "sentences": len(records)}
        log.info(
            "%s: precision %.3f recall %.3f f1 %.3f", name, *(results[name][k] for k in ("precision", "recall", "f1"))
        )
    samples = [
        {"id": r["id"], "tokens": r["tokens"], "reference": r["tags"], "base": b, "finetuned": f}
        for r, b, f in zip(records, predicted["base"], predicted["finetuned"], strict=True)
    ]
    plots = {"scores.csv": _score_rows(results), "confusion.csv": tag_confusion(gold, predicted["finetuned"])}
    return results, samples, plots, speed


def _score_rows(results: dict) -> list[dict]:
    """Headline numbers, one row per model and metric: the base-vs-fine-tuned bar plot (one bar per `bar`)."""
    return [
        {"bar": f"{metric} ({model})", "model": model, "metric": metric, "value": value}
        for model, scores in results.items()
        for metric, value in scores.items()
        if isinstance(value, float)
    ]
