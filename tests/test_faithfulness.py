"""Faithfulness of simplified text to its source: doses and frequencies kept, changed or invented; medicines kept
or invented; copies of the source. Authored cases, the first one the fine-tuned model's real mistake."""

from __future__ import annotations

import math

import pytest

from medtune.faithfulness import Quantity, compare_quantities, copy_distance, medications, quantities
from medtune.metrics import score_texts

OXYCODONE = "Oxycodone 5 mg every 6 hours PRN severe pain, 10 tablets dispensed."
OXYCODONE_REWRITE = "You can take 5 tablets every 6 hours. If severe pain is present, 10 tablets will be dispensed."


def test_a_dose_turned_into_a_tablet_count_is_an_altered_quantity():
    result = compare_quantities(OXYCODONE, OXYCODONE_REWRITE)
    assert (result.preserved, result.altered, result.dropped, result.invented) == (2, 1, 0, 0)
    assert quantities(OXYCODONE) == [
        Quantity((5.0,), "mg"),
        Quantity((6.0,), "every hour"),
        Quantity((10.0,), "tablet"),
    ]


@pytest.mark.parametrize(
    "source, output",
    [
        ("Take 500 mg of amoxicillin.", "Take 0.5 g of amoxicillin."),  # the same mass in another unit
        ("Use 2.5 mL of the syrup.", "Use 2.5 ml of the syrup."),
        ("Take it twice a day.", "Take it 2 times a day."),
        ("Take it bid.", "Take it twice daily."),
        ("Give 1 g q6h.", "Give 1000 mg every 6 hours."),
        ("Take three tablets.", "Take 3 tablets."),
        ("Take 2 to 3 tablets.", "Take 2-3 tablets."),
        ("A dose of 1,000 mg.", "A dose of 1000 milligrams."),
    ],
)
def test_the_same_quantity_written_another_way_is_preserved(source, output):
    result = compare_quantities(source, output)
    assert result.preserved == result.source_total >= 1 and result.altered == result.invented == 0


@pytest.mark.parametrize(
    "source, output",
    [
        ("Take 5 mg daily.", "Take 5 g daily."),  # mg and g are not the same dose
        ("Take 2 to 3 tablets.", "Take 2 tablets."),
        ("Take it three times a day.", "Take it twice a day."),
        ("Every 4 hours.", "Every 6 hours."),
    ],
)
def test_a_changed_number_or_unit_is_altered(source, output):
    result = compare_quantities(source, output)
    assert (result.preserved, result.altered, result.invented) == (0, 1, 0)


def test_a_quantity_with_no_source_is_invented_and_one_left_out_is_dropped():
    result = compare_quantities("Take 40 mg daily for 7 days.", "Take 40 mg a day. Drink 2 litres of water.")
    assert (result.preserved, result.dropped, result.invented) == (1, 1, 1)  # 7 days dropped, 2 litres invented


def test_medicines_come_from_the_lexicon_whole_words_any_case():
    assert medications("Amoxicillin with IBUPROFEN; not an amoxicillinase.") == {"amoxicillin", "ibuprofen"}


def test_copies_are_measured_in_words_ignoring_case_and_punctuation():
    assert copy_distance("Take one tablet daily.", "take one tablet daily") == 0.0
    assert copy_distance("Take one tablet daily.", "Take one pill daily.") == pytest.approx(0.25)
    assert copy_distance("Rest.", "Drink water and rest.") == pytest.approx(0.75)


def test_the_faithfulness_metrics_pool_counts_over_the_test_set():
    sources = [OXYCODONE, "Start amoxicillin 500 mg three times a day.", "Rest and drink fluids."]
    outputs = [
        OXYCODONE_REWRITE,
        "Start amoxicillin and paracetamol 500 mg three times a day.",
        "Rest and drink fluids.",
    ]
    names = ["quantities_preserved", "quantities_altered", "quantities_invented", "medications_preserved",
             "medications_invented", "copy_rate", "near_copy_rate"]  # fmt: skip

    scores = score_texts(names, sources, outputs, ["unused"] * 3, 0.1)

    assert scores["quantities_preserved"] == pytest.approx(4 / 5)  # 2 of 3, then 2 of 2
    assert scores["quantities_altered"] == pytest.approx(1 / 5)
    assert scores["quantities_invented"] == 0.0
    assert scores["medications_preserved"] == 0.5  # amoxicillin kept, oxycodone left out of the rewrite
    assert scores["medications_invented"] == 0.5  # paracetamol, of the 2 medicines the outputs name
    assert scores["copy_rate"] == pytest.approx(1 / 3) and scores["near_copy_rate"] == pytest.approx(1 / 3)


def test_a_share_of_nothing_is_not_a_number():
    assert math.isnan(
        score_texts(["quantities_preserved"], ["Rest."], ["Rest well."], ["r"], 0.1)["quantities_preserved"]
    )
