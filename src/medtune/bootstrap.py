"""Bootstrap intervals over test examples, and the paired comparison of two revisions on the same examples.

Every metric of a test set is computed from per-example statistics summed over its examples: a mean score
(ROUGE-L, SARI, format adherence) sums one number per example, perplexity sums (negative log-likelihood, tokens),
BLEU sums sacrebleu's n-gram matches and lengths, entity precision / recall / F1 sum (true positives, predicted,
gold). `metrics/<task>/examples.jsonl` keeps those statistics per example, so any resample of the test set is
scored exactly as the whole set is, and two revisions can be compared example by example:

- `interval`: the percentile interval of a metric over `samples` resamples of the examples (seeded);
- `paired_difference`: the same resamples applied to both revisions' statistics of the same examples; the
  change is significant when its interval excludes 0 (the paired bootstrap of Koehn 2004, which sacrebleu runs
  for BLEU alone; here every metric is one of these sums, so one implementation covers them all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Finish = Callable[[np.ndarray, int], np.ndarray]  # summed statistics (resamples, k), examples -> metric (resamples,)
ENTITY_METRICS = ("precision", "recall", "f1")


def _mean(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[:, 0] / n


def _perplexity(sums: np.ndarray, n: int) -> np.ndarray:
    return np.exp(sums[:, 0] / sums[:, 1])


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (seqeval's zero_division=0)."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def _precision(sums: np.ndarray, n: int) -> np.ndarray:
    return _ratio(sums[:, 0], sums[:, 1])


def _recall(sums: np.ndarray, n: int) -> np.ndarray:
    return _ratio(sums[:, 0], sums[:, 2])


def _f1(sums: np.ndarray, n: int) -> np.ndarray:
    return _ratio(2 * sums[:, 0], sums[:, 1] + sums[:, 2])


def _share(sums: np.ndarray, n: int) -> np.ndarray:
    """count / of how many, pooled over the examples (quantities kept of the source's); NaN when there are none."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


def _bleu(sums: np.ndarray, n: int) -> np.ndarray:
    """sacrebleu's corpus BLEU (its defaults: exponential smoothing) from summed `bleu_statistics` rows."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU()
    return np.array([bleu._compute_score_from_stats(row.tolist()).score for row in sums])


FINISH: dict[str, Finish] = {
    "perplexity": _perplexity,
    "bleu": _bleu,
    "precision": _precision,
    "recall": _recall,
    "f1": _f1,
    **dict.fromkeys(
        (
            "quantities_preserved",
            "quantities_altered",
            "quantities_invented",
            "medications_preserved",
            "medications_invented",
            "exact_match",
        ),
        _share,
    ),
}


def statistic(metric: str) -> tuple[str, Finish]:
    """Where a metric's per-example statistics are kept in examples.jsonl and how they become the metric: entity
    scores share one triple (`f1`, `precision` -> `entities`; `per_type.Disease.f1` -> `entities.Disease`), every
    other metric has its own key, and is finished by its last name (`general.perplexity` as perplexity); one without
    an entry in FINISH is a mean."""
    last = metric.rsplit(".", 1)[-1]
    if last in ENTITY_METRICS:
        kind = metric.split(".")[1] if metric.startswith("per_type.") else None
        return ("entities" if kind is None else f"entities.{kind}"), FINISH[last]
    return metric, FINISH.get(last, _mean)


def finish(metric: str, rows: list) -> float:
    """The metric of a whole test set from its examples' statistics (`rows`: one number or list per example)."""
    return _whole(statistic(metric)[1], _matrix(rows))


def _whole(done: Finish, stats: np.ndarray) -> float:
    return float(done(stats.sum(axis=0, keepdims=True), len(stats))[0])


def resample_counts(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n): how often each of n examples is drawn in each resample of n examples, with replacement."""
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=samples)


@dataclass(frozen=True)
class Bootstrap:
    samples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def interval(self, metric: str, rows: list) -> tuple[float, float]:
        """The `confidence` percentile interval of `metric` over resamples of the examples."""
        stats = _matrix(rows)
        _, done = statistic(metric)
        values = done(resample_counts(len(stats), self.samples, self.seed) @ stats, len(stats))
        return self._percentiles(values)

    def paired_difference(self, metric: str, old: list, new: list) -> tuple[float, float, float]:
        """`(new - old, low, high)`: the change of `metric` on the whole set and its interval over resamples that
        draw the same examples from both revisions (`old[i]` and `new[i]` are one example's statistics)."""
        a, b = _matrix(old), _matrix(new)
        if len(a) != len(b):
            raise ValueError(f"paired statistics need the same examples: {len(a)} old, {len(b)} new")
        _, done = statistic(metric)
        counts = resample_counts(len(a), self.samples, self.seed)
        deltas = done(counts @ b, len(b)) - done(counts @ a, len(a))
        return (_whole(done, b) - _whole(done, a), *self._percentiles(deltas))

    def _percentiles(self, values: np.ndarray) -> tuple[float, float]:
        tail = 100 * (1 - self.confidence) / 2
        low, high = np.nanpercentile(values, [tail, 100 - tail])  # NaN: a resample without what a share counts
        return float(low), float(high)


def _matrix(rows: list) -> np.ndarray:
    """Per-example statistics as an (examples, k) float array; a plain number per example is k = 1."""
    if not rows:
        raise ValueError("no examples to score")
    return np.array([row if isinstance(row, list) else [row] for row in rows], dtype=float)
