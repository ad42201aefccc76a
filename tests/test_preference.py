"""Preference pairs: the user's own pairs read with file:line errors, and pairs built from a task's own checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_lines
from medtune.data import read_file_rows, to_preference_records
from medtune.errors import DataError
from medtune.preference import PairStats, best_and_worst, score_candidates

SIMPLIFICATION = ["sari", "quantities_preserved", "quantities_altered", "quantities_invented", "medications_preserved"]
TERMINOLOGY = ["rouge_l", "format_adherence", "disclaimer_rate"]
SOURCE = "Start oxycodone 5 mg every 6 hours as needed for post-operative pain."
REFERENCE = "Take oxycodone 5 mg every 6 hours if you need it for pain after your operation."


def test_a_changed_dose_or_a_dropped_medicine_ranks_below_a_faithful_answer():
    faithful = "Take oxycodone 5 mg every 6 hours when you have pain after surgery."
    wrong_dose = "Take 5 tablets of oxycodone every 6 hours when you have pain after surgery."
    no_medicine = "Take a painkiller every 6 hours when you have pain after surgery."

    scores = score_candidates(SIMPLIFICATION, SOURCE, REFERENCE, [faithful, wrong_dose, no_medicine])

    assert scores[0].faults == {}
    assert scores[1].faults == {"quantities_altered": 1}  # 5 mg became 5 tablets
    assert scores[2].faults == {"quantities_preserved": 1, "medications_preserved": 1}  # 5 mg and oxycodone gone
    assert scores[0].value > scores[1].value > scores[2].value


def test_the_best_and_worst_answer_form_the_pair_and_the_reasons_are_counted():
    record = {"id": "s-1", "prompt": SOURCE, "response": REFERENCE, "system": "Explain simply."}
    answers = ["Take 10 mg of oxycodone every 6 hours.", REFERENCE.replace("operation", "surgery")]
    stats = PairStats()

    pair = best_and_worst(record, answers, SIMPLIFICATION, 0.05, stats)

    assert pair["chosen"] == REFERENCE and pair["rejected"] == answers[0]
    assert pair["system"] == "Explain simply." and pair["score"]["chosen"] > pair["score"]["rejected"]
    assert stats.as_dict() == {
        "prompts": 1,
        "pairs": 1,
        "ties_skipped": 0,
        "reference_chosen": 1,
        "reference_rejected": 0,
        "rejected_faults": {"quantities_altered": 1},
    }


def test_answers_within_the_margin_are_a_tie_and_make_no_pair():
    record = {"id": "s-2", "prompt": SOURCE, "response": REFERENCE}
    stats = PairStats()

    assert best_and_worst(record, [REFERENCE, REFERENCE], SIMPLIFICATION, 0.05, stats) is None
    assert (stats.prompts, stats.pairs, stats.ties) == (1, 0, 1)


def test_a_terminology_answer_out_of_format_or_without_disclaimer_is_rejected():
    reference = (
        "**Definition**: Tachycardia is a fast heart rate.\n**Explanation**: Above 100 beats a minute at rest.\n"
        "**Clinical Relevance**: It can signal fever, dehydration or heart disease.\n"
        "**Note**: This is educational information only, not medical advice."
    )
    plain = "Tachycardia means the heart beats faster than 100 times a minute at rest."
    record = {"id": "t-1", "prompt": "Tachycardia", "response": reference}

    [scored] = score_candidates(TERMINOLOGY, "Tachycardia", reference, [plain])
    pair = best_and_worst(record, [plain], TERMINOLOGY, 0.05, PairStats())

    assert scored.faults == {"format_adherence": 1, "disclaimer_rate": 1}
    assert pair["chosen"] == reference and pair["rejected"] == plain


def preference_file(tmp_path: Path, rows: list[dict]) -> Path:
    return write_lines(tmp_path / "pairs.jsonl", [json.dumps(row) for row in rows])


def test_the_users_pairs_keep_their_system_prompt():
    rows = [("p.jsonl:1", {"id": "p1", "prompt": "Q?", "chosen": "Good.", "rejected": "Bad.", "system": "Be brief."})]

    records, problems = to_preference_records(rows, "id", "error")

    assert records == [{"id": "p1", "prompt": "Q?", "chosen": "Good.", "rejected": "Bad.", "system": "Be brief."}]
    assert problems == []


@pytest.mark.parametrize(
    ("second", "problem"),
    [
        ({"prompt": "Q?", "chosen": "Good."}, r'pairs.jsonl:2: column "rejected" \(mapped to rejected\) not found'),
        ({"prompt": "Q?", "chosen": "Same.", "rejected": "Same."}, "pairs.jsonl:2: chosen and rejected are the same"),
        ({"prompt": "", "chosen": "Good.", "rejected": "Bad."}, 'pairs.jsonl:2: field "prompt" is empty'),
    ],
)
def test_a_bad_pair_names_its_line(tmp_path, second, problem):
    path = preference_file(tmp_path, [{"prompt": "Q1?", "chosen": "Good.", "rejected": "Bad."}, second])

    with pytest.raises(DataError, match=problem):
        to_preference_records(read_file_rows(path), None, "error")


def test_bad_pairs_can_be_dropped_and_counted(tmp_path):
    path = preference_file(
        tmp_path, [{"prompt": "Q1?", "chosen": "Good.", "rejected": "Bad."}, {"prompt": "Q2?", "chosen": "Good."}]
    )

    records, problems = to_preference_records(read_file_rows(path), None, "drop")

    assert [r["prompt"] for r in records] == ["Q1?"] and len(problems) == 1
