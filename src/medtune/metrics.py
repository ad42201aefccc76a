"""Task metrics: pure functions of strings (no model, no tokenizer).

`TEXT_METRICS` maps the names a task config lists under `metrics:` to functions of
(sources, predictions, references) -> float; `score_texts` computes the ones a task asks for.
"""

from __future__ import annotations

from collections.abc import Callable

from rouge_score import rouge_scorer

from medtune.errors import ConfigError


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (0-1, Porter stemming) of each prediction against its reference."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
    return sum(scores) / len(scores)


TEXT_METRICS: dict[str, Callable[[list[str], list[str], list[str]], float]] = {
    "rouge_l": lambda sources, predictions, references: rouge_l(predictions, references),
}


def score_texts(names: list[str], sources: list[str], predictions: list[str], references: list[str]) -> dict:
    """`{name: value}` for each metric a task config lists; an unknown name is a config error."""
    unknown = [n for n in names if n not in TEXT_METRICS]
    if unknown:
        raise ConfigError("tasks.<task>.metrics", f"unknown metric {unknown[0]!r}; known: {', '.join(TEXT_METRICS)}")
    return {name: TEXT_METRICS[name](sources, predictions, references) for name in names}
