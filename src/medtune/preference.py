"""Preference pairs for DPO: read from the user's file, or built from the SFT model's own answers.

Built pairs rank a prompt's candidates (the SFT model's sampled answers and the reference answer) by the checks the
task already reports, so that preference tuning pushes the model towards what evaluation rewards:

    score = quality - errors

- `errors` counts each fault the task's metrics look for (its `metrics:` list decides which): a source quantity
  dropped (`quantities_preserved`) or changed (`quantities_altered`), a quantity not in the source
  (`quantities_invented`), a medicine of the source
  dropped (`medications_preserved`) or one added (`medications_invented`), the four-part format broken
  (`format_adherence`), the disclaimer missing (`disclaimer_rate`). One fault outweighs any quality difference.
- `quality` in [0, 1] compares the candidate with the reference: SARI / 100 for a task that lists `sari`, else
  ROUGE-L (the reference scores itself 1 on ROUGE-L, and SARI against itself).

The best and the worst candidate of a prompt form a pair when their scores differ by more than `margin`;
otherwise the prompt is a tie and skipped. Every decision is counted (`PairStats`), for stats.json.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from medtune.faithfulness import Comparison, compare_quantities, medications
from medtune.metrics import follows_terminology_format, has_disclaimer, rouge_l_scores, sari_scores

# metric of a task config -> the fault it counts in a candidate: (source, output, the two texts' quantities
# compared once) -> count
FAULTS: dict[str, Callable[[str, str, Comparison], int]] = {
    "quantities_preserved": lambda source, output, quantities: quantities.dropped,
    "quantities_altered": lambda source, output, quantities: quantities.altered,
    "quantities_invented": lambda source, output, quantities: quantities.invented,
    "medications_preserved": lambda source, output, quantities: len(medications(source) - medications(output)),
    "medications_invented": lambda source, output, quantities: len(medications(output) - medications(source)),
    "format_adherence": lambda source, output, quantities: int(not follows_terminology_format(output)),
    "disclaimer_rate": lambda source, output, quantities: int(not has_disclaimer(output)),
}


@dataclass(frozen=True)
class Score:
    quality: float  # 0-1, against the reference
    faults: dict[str, int]  # fault name -> count, only those found

    @property
    def value(self) -> float:
        return self.quality - sum(self.faults.values())


@dataclass
class PairStats:
    prompts: int = 0
    pairs: int = 0
    ties: int = 0  # best and worst within the margin: no pair
    reference_chosen: int = 0  # pairs whose chosen answer is the reference
    reference_rejected: int = 0  # pairs whose rejected answer is the reference: the model beat its own data
    rejected_faults: Counter = field(default_factory=Counter)  # faults of the rejected answers, by name

    def as_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "pairs": self.pairs,
            "ties_skipped": self.ties,
            "reference_chosen": self.reference_chosen,
            "reference_rejected": self.reference_rejected,
            "rejected_faults": dict(sorted(self.rejected_faults.items())),
        }


def score_candidates(metrics: list[str], source: str, reference: str, candidates: list[str]) -> list[Score]:
    """Each candidate's Score by the task's metrics (`source`: the prompt's input text, which quantities and
    medicines are checked against)."""
    if "sari" in metrics:
        quality = [
            s / 100 for s in sari_scores([source] * len(candidates), candidates, [[reference]] * len(candidates))
        ]
    else:
        quality = rouge_l_scores(candidates, [reference] * len(candidates))
    checks = [name for name in metrics if name in FAULTS]
    scores = []
    for text, q in zip(candidates, quality, strict=True):
        quantities = compare_quantities(source, text)
        faults = {name: FAULTS[name](source, text, quantities) for name in checks}
        scores.append(Score(round(q, 6), {name: n for name, n in faults.items() if n}))
    return scores


def best_and_worst(
    record: dict, answers: list[str], metrics: list[str], margin: float, stats: PairStats
) -> dict | None:
    """The pair of one prepared sft record (`prompt`, `response`, optional `system`) from the model's `answers`
    and its reference, or None for a tie. Equal scores keep the first candidate: the reference comes first, so it
    is preferred over an answer that scores the same."""
    candidates = [record["response"], *answers]
    scores = score_candidates(metrics, record["prompt"], record["response"], candidates)
    stats.prompts += 1
    best = max(range(len(candidates)), key=lambda i: scores[i].value)
    worst = min(range(len(candidates)), key=lambda i: scores[i].value)
    if scores[best].value - scores[worst].value <= margin:
        stats.ties += 1
        return None
    stats.pairs += 1
    stats.reference_chosen += best == 0
    stats.reference_rejected += worst == 0
    stats.rejected_faults.update(scores[worst].faults)
    pair = {"id": record["id"], "prompt": record["prompt"], "chosen": candidates[best], "rejected": candidates[worst]}
    pair["score"] = {"chosen": round(scores[best].value, 6), "rejected": round(scores[worst].value, 6)}
    if "system" in record:
        pair["system"] = record["system"]
    return pair
