"""Base vs fine-tuned evaluation on a task's test split, one function per kind of model head.

Each returns an `Evaluation`: results `{"base": {...}, "finetuned": {...}}` for eval.json, each metric with its
bootstrap interval over the test examples (`interval`); per-example statistics for examples.jsonl (what the
intervals and the report's paired comparison resample, medtune.bootstrap); side-by-side samples for samples.jsonl;
plots (a CSV file name -> its rows); and speed, the wall-clock measurements for eval_resources.json (apart, so
that eval.json reproduces byte for byte).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtune.bootstrap import Bootstrap, finish, statistic
from medtune.config import EvalConfig, JudgeConfig, TaskConfig
from medtune.forgetting import METRICS as GENERAL_METRICS
from medtune.forgetting import PREFIX as GENERAL
from medtune.forgetting import general_statistics
from medtune.generation import example_nll, generate, predict_tags
from medtune.judge import judge_simplifications
from medtune.metrics import direction, entity_statistics, seqeval_scores, tag_confusion, text_statistics
from medtune.modeling import device, load_causal_lm, load_token_classifier
from medtune.tasks import render_record_prompt

log = logging.getLogger(__name__)
Models = dict[str, Path]  # {"base": models/base/<model>, "finetuned": models/merged/<task>}


@dataclass
class Evaluation:
    results: dict  # eval.json
    examples: list[dict]  # examples.jsonl: {"id", "base": {statistics key: value}, "finetuned": {...}}
    samples: list[dict]  # samples.jsonl
    plots: dict[str, list[dict]]  # CSV file name -> rows
    speed: dict  # eval_resources.json
    general_samples: list[dict] = field(default_factory=list)  # general_samples.jsonl: the forgetting check's answers


@dataclass
class GeneralSet:
    """The forgetting check's items and their tokenized references (medtune.forgetting)."""

    items: list[dict]
    examples: list[dict]


def evaluate_generation(
    task: TaskConfig,
    records: list[dict],
    examples: list[dict],
    tokenizer: Any,
    models: Models,
    eval_cfg: EvalConfig,
    seed: int,
    judge: JudgeConfig | None,
    general: GeneralSet | None = None,
) -> Evaluation:
    """Perplexity of the references, greedy generations scored by the task's metrics, optional judge, and the
    forgetting check on the general set (when given)."""
    prompts = [render_record_prompt(tokenizer, r, task.system, task.prompt_template) for r in records]
    sources, references = [r["prompt"] for r in records], [r["response"] for r in records]
    ids = [r["id"] for r in records]
    results, statistics, outputs, speed, general_outputs = {}, {}, {}, {}, {}
    for name, model_dir in models.items():
        log.info("Evaluating the %s model (%s) on %d test examples", name, model_dir, len(records))
        model = load_causal_lm(model_dir)
        gens = generate(model, tokenizer, prompts, task.generation.max_new_tokens, eval_cfg.batch_size)
        outputs[name], speed[name] = gens.texts, {"ms_per_token": round(gens.ms_per_token, 2)}
        nll = example_nll(model, examples, eval_cfg.batch_size, tokenizer.pad_token_id)
        statistics[name] = {
            "perplexity": _per_record(ids, [e["id"] for e in examples], nll),
            **text_statistics(task.metrics, sources, gens.texts, references, eval_cfg.near_copy_distance),
        }
        results[name] = {
            **_scores(statistics[name]),
            "generated_tokens": gens.new_tokens,
            "examples": len(records),
        }
        if judge is not None:
            results[name].update(judge_simplifications(judge, sources, gens.texts))
        log.info("%s: %s", name, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[name].items()})
        if general is not None:
            log.info("Forgetting check: the %s model on %d general instructions", name, len(general.items))
            general_stats, answers = general_statistics(model, tokenizer, general.items, general.examples, eval_cfg)
            statistics[name].update(general_stats)
            general_outputs[name] = answers.texts
            results[name]["general"] = _scores(general_stats, prefix=GENERAL)
            log.info("%s, general: %s", name, {k: round(v, 4) for k, v in results[name]["general"].items()})
    samples = [
        {"id": r["id"], "source": r["prompt"], "reference": r["response"], **{n: out[i] for n, out in outputs.items()}}
        for i, r in enumerate(records)
    ]
    general_ids = [item["id"] for item in general.items] if general is not None else []
    done = _with_intervals(results, statistics, ids, eval_cfg, seed, samples, {}, speed, general_ids)
    if general is not None:
        done.general_samples = [
            {"id": item["id"], "instruction": item["instruction"], "reference": item["reference"],
             **{n: texts[i] for n, texts in general_outputs.items()}}
            for i, item in enumerate(general.items)
        ]  # fmt: skip
    return done


def evaluate_tagging(
    task: TaskConfig, records: list[dict], examples: list[dict], models: Models, eval_cfg: EvalConfig, seed: int
) -> Evaluation:
    """seqeval entity scores (strict IOB2) of the fine-tuned tagger and of the base model with an untrained head
    (the floor), plus the fine-tuned model's tag confusion counts."""
    gold = [r["tags"] for r in records]
    results, statistics, predicted, speed = {}, {}, {}, {}
    for name, model_dir in models.items():
        log.info("Tagging %d test sentences with the %s model (%s)", len(records), name, model_dir)
        model = load_token_classifier(model_dir, list(task.labels), seed, attention=task.attention)
        model = model.to(device()).eval()
        start = time.perf_counter()
        predicted[name] = predict_tags(
            model, examples, list(task.labels), eval_cfg.batch_size, [r["id"] for r in records]
        )
        speed[name] = {"ms_per_sentence": round(1000 * (time.perf_counter() - start) / max(len(records), 1), 2)}
        results[name] = {**seqeval_scores(gold, predicted[name]), "sentences": len(records)}
        statistics[name] = entity_statistics(gold, predicted[name])
        log.info(
            "%s: precision %.3f recall %.3f f1 %.3f", name, *(results[name][k] for k in ("precision", "recall", "f1"))
        )
    samples = [
        {"id": r["id"], "tokens": r["tokens"], "reference": r["tags"], "base": b, "finetuned": f}
        for r, b, f in zip(records, predicted["base"], predicted["finetuned"], strict=True)
    ]
    plots = {"confusion.csv": tag_confusion(gold, predicted["finetuned"])}
    return _with_intervals(results, statistics, [r["id"] for r in records], eval_cfg, seed, samples, plots, speed)


def _with_intervals(
    results: dict, statistics: dict, ids: list[str], eval_cfg: EvalConfig, seed: int, samples: list[dict], plots: dict,
    speed: dict, general_ids: Sequence[str] = (),
) -> Evaluation:  # fmt: skip
    """The Evaluation, each headline metric of each model given its bootstrap interval (`eval.bootstrap_samples`
    resamples of the test examples, seeded; none when 0), the second model's change from the first (`difference`:
    fine-tuned minus base, or aligned minus fine-tuned) with its paired interval (the same resampled examples for
    both), and the per-example statistics in examples.jsonl rows: one per test example, then one per general item
    (`general.<metric>` statistics, the forgetting check)."""
    bootstrap = Bootstrap(eval_cfg.bootstrap_samples, eval_cfg.confidence, seed)
    for name, scores in results.items():
        if bootstrap.samples and ids:
            scores["interval"] = {
                metric: dict(zip(("low", "high"), bootstrap.interval(metric, statistics[name][key]), strict=True))
                for metric, key in _interval_metrics(scores, statistics[name])
            }
    first, second = list(results)[:2]
    if bootstrap.samples and ids:
        changes = _differences(results, statistics, first, second, bootstrap)
        results["difference"] = {"of": f"{second} - {first}", **changes}
    results["bootstrap"] = {"samples": bootstrap.samples, "confidence": bootstrap.confidence, "seed": seed}
    examples = _example_rows(statistics, ids, lambda key: not key.startswith(GENERAL))
    examples += _example_rows(statistics, general_ids, lambda key: key.startswith(GENERAL))
    plots = {"scores.csv": _score_rows({k: v for k, v in results.items() if k in statistics}), **plots}
    return Evaluation(results, examples, samples, plots, speed)


def _differences(results: dict, statistics: dict, first: str, second: str, bootstrap: Bootstrap) -> dict:
    """`{metric: {"delta", "low", "high"}}`: each headline metric both models have, second minus first, with the
    paired bootstrap interval of the change (left out where one model has nothing to count, e.g. no quantity kept)."""
    shared = [(m, key) for m, key in _interval_metrics(results[second], statistics[second]) if key in statistics[first]]
    differences = {}
    for metric, key in shared:
        change = bootstrap.paired_difference(metric, statistics[first][key], statistics[second][key])
        if all(math.isfinite(value) for value in change):
            differences[metric] = dict(zip(("delta", "low", "high"), change, strict=True))
    return differences


def _example_rows(statistics: dict, ids: Sequence[str], keep: Callable[[str], bool]) -> list[dict]:
    """examples.jsonl rows of these ids: each model's statistics of the keys `keep` accepts, in key order."""
    kept = {name: {k: rows for k, rows in sorted(stats.items()) if keep(k)} for name, stats in statistics.items()}
    return [
        {"id": id_, **{name: {k: rows[i] for k, rows in stats.items()} for name, stats in kept.items()}}
        for i, id_ in enumerate(ids)
    ]


def _scores(statistics: dict, prefix: str = "") -> dict:
    """Each metric of the whole test set; a share of nothing (no quantities in any source) is left out, said.
    `prefix` is taken off the names (`general.rouge_l` -> `rouge_l` under eval.json's `general`)."""
    scores = {metric.removeprefix(prefix): finish(metric, rows) for metric, rows in statistics.items()}
    for metric in [m for m, value in scores.items() if math.isnan(value)]:
        log.info("%s: nothing to count in these test examples, not scored", metric)
        del scores[metric]
    return scores


def _interval_metrics(scores: dict, statistics: dict) -> list[tuple[str, str]]:
    """`(metric, statistics key)` of each headline metric with per-example statistics: the text metrics and
    perplexity, or entity precision / recall / F1 and each type's F1."""
    metrics = [m for m in scores if isinstance(scores[m], float) and direction(m) is not None]
    metrics += [f"per_type.{kind}.f1" for kind in scores.get("per_type", {})]
    metrics += [GENERAL + m for m in scores.get("general", {}) if m in GENERAL_METRICS]
    pairs = [(m, statistic(m)[0]) for m in metrics]
    return [(m, key) for m, key in pairs if key in statistics]


def _per_record(record_ids: list[str], example_ids: list[str], rows: list[list[float]]) -> list[list[float]]:
    """Per-example statistics summed per record, in record order (a record whose example was dropped at
    tokenization counts `[0, 0]`)."""
    summed: dict[str, list[float]] = {}
    for id_, row in zip(example_ids, rows, strict=True):
        summed[id_] = [a + b for a, b in zip(summed.get(id_, [0.0] * len(row)), row, strict=True)]
    return [summed.get(id_, [0.0, 0]) for id_ in record_ids]


def _score_rows(results: dict) -> list[dict]:
    """Headline numbers, one row per model and metric: the base-vs-fine-tuned bar plot (one bar per `bar`)."""
    return [
        {"bar": f"{metric} ({model})", "model": model, "metric": metric, "value": value}
        for model, scores in results.items()
        for metric, value in scores.items()
        if isinstance(value, float)
    ]
