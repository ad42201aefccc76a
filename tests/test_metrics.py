"""Text metrics are pure functions with known fixed points."""

from __future__ import annotations

import pytest

from medtune.errors import ConfigError
from medtune.metrics import rouge_l, score_texts


def test_rouge_l_fixed_points():
    assert rouge_l(["Gout is an inflammatory arthritis."], ["Gout is an inflammatory arthritis."]) == 1.0
    assert rouge_l(["Insulin lowers blood glucose."], ["Migraine headaches recur."]) == 0.0
    # LCS "gout is arthritis" = 3 tokens; P = 3/3, R = 3/5 -> F1 = 0.75
    assert rouge_l(["gout is arthritis"], ["gout is an inflammatory arthritis"]) == pytest.approx(0.75)


def test_rouge_l_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])


def test_task_metrics_are_looked_up_by_name():
    assert score_texts(["rouge_l"], ["src"], ["same words"], ["same words"]) == {"rouge_l": 1.0}
    with pytest.raises(ConfigError, match="unknown metric 'bleu'; known: rouge_l"):
        score_texts(["bleu"], ["src"], ["a"], ["a"])
