"""Bootstrap intervals and paired comparisons over per-example statistics (medtune.bootstrap), and the statistics
each metric keeps per example (medtune.metrics): summed over a test set they give exactly the metric of that set."""

from __future__ import annotations

import math
import random

import pytest

from medtune.bootstrap import Bootstrap, finish
from medtune.metrics import bleu, bleu_statistics, entity_statistics, seqeval_scores

GOLD = [
    ["B-Medication", "O", "B-Disease", "I-Disease"],
    ["O", "B-Disease", "O"],
    ["B-Medication", "I-Medication", "O", "O"],
    ["O", "O"],
]
PREDICTED = [
    ["B-Medication", "O", "B-Disease", "O"],  # the disease's span is cut short: not an entity match
    ["O", "B-Disease", "O"],
    ["B-Medication", "I-Medication", "O", "B-Disease"],  # one invented
    ["I-Medication", "O"],  # an orphan I- is no entity in strict IOB2
]


def test_entity_statistics_summed_give_seqevals_scores_overall_and_per_type():
    stats, scores = entity_statistics(GOLD, PREDICTED), seqeval_scores(GOLD, PREDICTED)
    for metric in ("precision", "recall", "f1"):
        assert finish(metric, stats["entities"]) == pytest.approx(scores[metric], abs=1e-12)
        for kind, per_type in scores["per_type"].items():
            assert finish(f"per_type.{kind}.{metric}", stats[f"entities.{kind}"]) == pytest.approx(per_type[metric])


def test_bleu_statistics_summed_give_sacrebleus_corpus_bleu():
    predictions = ["Take one tablet twice a day.", "Rest and drink water.", "See a doctor if it hurts."]
    references = ["Take one tablet two times a day.", "Rest and drink fluids.", "See your doctor if pain persists."]
    assert finish("bleu", bleu_statistics(predictions, references)) == pytest.approx(bleu(predictions, references))


def test_an_interval_reproduces_with_its_seed_and_holds_the_value_of_the_whole_set():
    scores = [random.Random(i).random() for i in range(40)]
    interval = Bootstrap(samples=500, seed=3).interval("rouge_l", scores)
    assert Bootstrap(samples=500, seed=3).interval("rouge_l", scores) == interval
    assert Bootstrap(samples=500, seed=4).interval("rouge_l", scores) != interval
    assert interval[0] < finish("rouge_l", scores) < interval[1]


def test_more_examples_give_a_narrower_interval():
    def width(n: int) -> float:
        low, high = Bootstrap(seed=0).interval("sari", [random.Random(i).uniform(0, 100) for i in range(n)])
        return high - low

    assert width(400) < width(100) / 1.5  # about 1/sqrt(4) as wide


def test_the_paired_comparison_finds_a_real_difference_and_none_between_identical_runs():
    noise = [random.Random(i).gauss(0, 0.2) for i in range(60)]
    old = [0.5 + e for e in noise]
    better = [s + 0.05 + random.Random(100 + i).gauss(0, 0.02) for i, s in enumerate(old)]  # +0.05 on every example

    change, low, high = Bootstrap(seed=0).paired_difference("rouge_l", old, better)
    assert change == pytest.approx(0.05, abs=0.01) and 0 < low < change < high
    assert Bootstrap(seed=0).paired_difference("rouge_l", old, old) == (0.0, 0.0, 0.0)
    # the same +0.05 on unpaired data this noisy would not show: the pairing is what finds it
    assert Bootstrap(seed=0).interval("rouge_l", better)[0] < finish("rouge_l", old)


def test_perplexity_of_a_set_pools_its_tokens():
    rows = [[20.0, 10], [2.0, 10], [40.0, 20]]  # [summed negative log-likelihood, tokens] per example
    assert finish("perplexity", rows) == pytest.approx(math.exp(62 / 40))  # not the mean of per-example perplexities


def test_a_paired_comparison_needs_the_same_examples_on_both_sides():
    with pytest.raises(ValueError, match="same examples: 3 old, 2 new"):
        Bootstrap().paired_difference("f1", [[1, 1, 1]] * 3, [[1, 1, 1]] * 2)
