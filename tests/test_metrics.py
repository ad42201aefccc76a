"""Text metrics are pure functions with known fixed points."""

from __future__ import annotations

import pytest

from medtune.config import METRIC_NAMES
from medtune.metrics import (
    KNOWN_METRICS,
    bleu,
    fkgl,
    follows_terminology_format,
    has_disclaimer,
    rouge_l,
    sari,
    score_texts,
)

SARI_SOURCE = "About 95 species are currently accepted."
SARI_REFERENCES = [
    "About 95 species are currently known.",
    "About 95 species are now accepted.",
    "95 species are now accepted.",
]


def test_sari_matches_the_published_example():
    """The value Hugging Face evaluate's SARI card publishes for this example."""
    assert sari([SARI_SOURCE], ["About 95 you now get in."], [SARI_REFERENCES]) == pytest.approx(26.953601953601954)


def test_sari_rewards_matching_a_reference_and_punishes_copying_the_source():
    perfect = sari(
        ["the patient has acute renal failure ."],
        ["the kidneys stopped working ."],
        [["the kidneys stopped working ."]],
    )
    assert perfect == pytest.approx(100.0)
    copy = sari([SARI_SOURCE], [SARI_SOURCE], [SARI_REFERENCES])
    one_edit = sari([SARI_SOURCE], ["About 95 species are now accepted."], [SARI_REFERENCES])
    assert 0 < copy < one_edit <= 100


def test_sari_is_the_mean_of_sentence_scores():
    a = sari([SARI_SOURCE], ["About 95 you now get in."], [SARI_REFERENCES])
    b = sari([SARI_SOURCE], [SARI_SOURCE], [SARI_REFERENCES])
    both = sari([SARI_SOURCE] * 2, ["About 95 you now get in.", SARI_SOURCE], [SARI_REFERENCES] * 2)
    assert both == pytest.approx((a + b) / 2)


def test_rouge_l_and_bleu_fixed_points():
    same = "Gout is an inflammatory arthritis."
    assert rouge_l([same], [same]) == 1.0 and bleu([same], [same]) == pytest.approx(100.0)
    assert rouge_l(["Insulin lowers blood glucose."], ["Migraine headaches recur."]) == 0.0
    # LCS "gout is arthritis" = 3 tokens; P = 3/3, R = 3/5 -> F1 = 0.75
    assert rouge_l(["gout is arthritis"], ["gout is an inflammatory arthritis"]) == pytest.approx(0.75)


def test_plain_language_has_a_lower_reading_grade():
    clinical = "CT abdomen demonstrates acute uncomplicated sigmoid diverticulitis without abscess formation."
    plain = "The scan shows a swollen pouch in your bowel. There is no pus."
    assert fkgl([plain]) < 6 < 14 < fkgl([clinical])


GOOD = (
    "**Definition**: A fast heart rate.\n"
    "**Explanation**: The heart beats more than 100 times a minute at rest.\n"
    "**Clinical Relevance**: It can signal fever, blood loss or a heart rhythm problem.\n"
    "**Note**: This is educational information only, not medical advice."
)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (GOOD, True),
        ("  \n" + GOOD.replace("\n", "\n\n"), True),  # blank lines and leading space are fine
        (GOOD.replace("**Explanation**: The heart beats more than 100 times a minute at rest.\n", ""), False),
        (
            GOOD.replace("**Definition**", "**Explanation**", 1).replace("**Explanation**: The", "**Definition**: The"),
            False,
        ),  # wrong order
        (GOOD.replace("A fast heart rate.", " "), False),  # empty section
        ("Tachycardia means a fast heart rate.\n" + GOOD, False),  # text before the first section
        (GOOD + "\n**Note**: again", False),  # a section twice
        ("Tachycardia is a fast heart rate.", False),
    ],
)
def test_terminology_format_checker(text, ok):
    assert follows_terminology_format(text) is ok


def test_disclaimer_detection():
    assert has_disclaimer(GOOD)
    assert has_disclaimer("Please consult your doctor before changing any medicine.")
    assert not has_disclaimer("Tachycardia is a fast heart rate.")


def test_task_metrics_are_looked_up_by_name():
    predictions = [GOOD, "No format.", "No format, but see your doctor."]
    scores = score_texts(["format_adherence", "disclaimer_rate"], ["x"] * 3, predictions, ["r"] * 3, 0.1)
    assert scores == {"format_adherence": pytest.approx(1 / 3), "disclaimer_rate": pytest.approx(2 / 3)}


def test_the_metric_names_params_may_list_are_the_metrics_medtune_computes():
    """medtune.checks refuses a name outside config.METRIC_NAMES when params are read, so the two lists must agree."""
    assert sorted(METRIC_NAMES) == sorted(KNOWN_METRICS)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])
