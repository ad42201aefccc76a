"""The PHI scan of `prepare`: planted identifiers are found, clinical numbers are not, and each policy does its job
without the identifier itself ever reaching a log, stats.json or an error message."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import ROOT, make_project, qa, run_stage
from medtune import data, privacy
from medtune.config import compose_params
from medtune.errors import ConfigError, DataError

NO_PHI = dict.fromkeys(privacy.PHI_TYPES, 0)


@pytest.mark.parametrize(
    ("text", "phi_type", "found"),
    [
        ("Write to jane.doe@example.org for the results.", "email", "jane.doe@example.org"),
        ("Call (212) 555-0142 to book.", "phone", "(212) 555-0142"),
        ("Call 212-555-0142.", "phone", "212-555-0142"),
        ("Call 212.555.0142 after 5 pm.", "phone", "212.555.0142"),
        ("Call 212 555 0142 after 5 pm.", "phone", "212 555 0142"),
        ("Her mobile is +1 212 555 0142.", "phone", "+1 212 555 0142"),
        ("The helpline 1-800-555-0199 is free.", "phone", "1-800-555-0199"),
        ("Daughter in London: +44 20 7946 0958.", "phone", "+44 20 7946 0958"),
        ("phone: 2125550142", "phone", "2125550142"),
        ("SSN 219-09-9999 on file.", "ssn", "219-09-9999"),
        ("Insurance form lists 219-09-9999 as the number.", "ssn", "219-09-9999"),
        ("social security number 219 09 9999", "ssn", "219 09 9999"),
        ("MRN: 00482913, bed 4.", "mrn", "00482913"),
        ("medical record number AB-48291", "mrn", "AB-48291"),
        ("Patient ID: X7781234 on the wristband.", "mrn", "X7781234"),
        ("DOB: 03/12/1985", "date_of_birth", "03/12/1985"),
        ("D.O.B. 1985-03-12", "date_of_birth", "1985-03-12"),
        ("Date of birth March 12, 1985.", "date_of_birth", "March 12, 1985"),
        ("She was born on 12 March 1985 in Ohio.", "date_of_birth", "12 March 1985"),
        ("He was born in 1985.", "date_of_birth", "1985"),
        ("Lives at 42 Oak Street with her son.", "street_address", "42 Oak Street"),
        ("Letters to 1600 Pennsylvania Avenue.", "street_address", "1600 Pennsylvania Avenue"),
        ("Moved to 4B Elm Ave last year.", "street_address", "4B Elm Ave"),
        ("Clinic at 221 N. Baker St, Springfield.", "street_address", "221 N. Baker St"),
        ("Records at https://portal.example.org/patients/17.", "url", "https://portal.example.org/patients/17"),
        ("See www.example.com/results for details.", "url", "www.example.com/results"),
    ],
)
def test_a_planted_identifier_is_found(text, phi_type, found):
    assert [(m.type, text[m.start : m.end]) for m in privacy.find_phi(text)] == [(phi_type, found)]


@pytest.mark.parametrize(
    "text",
    [
        "Metformin 500 mg twice daily; 0.5 mg/kg of ketamine; amoxicillin 2 x 250 mg.",
        "HbA1c 7.2%, potassium 3.1 mmol/L, eGFR 45 mL/min/1.73 m2, BP 140/90 mmHg, INR 2.5.",
        "Diagnoses: E11.9, I10 and J45.909; ICD-10 E11.65 with Z79.4.",
        "Diagnosed in 2019; on 12/03/2021 the dose was doubled; CT on 2019-03-12.",
        "For 3 weeks, 2 times a day, in 45% of patients, 3 of 4 doses.",
        "Potassium reference range 3.5-5.0 mmol/L; sodium 135-145; platelets 150-400 x 10^9/L.",
        "Steps 1-2-3 of the protocol; target BP 120/80; range 100-150 1500 mL.",
        "Seen by Dr. Smith; on 3 March Dr. Patel reviewed; seen on 12 May, Dr. Jones agreed.",
        "St. John's wort interacts with warfarin.",
        "Patient ID band checked; MRN pending; born at 32 weeks; a newborn in 2020; stubborn in 2019.",
        "Lab code 1234567890 and 100000 IU vitamin D; CD4+ 350 cells/mm3; 2+ protein; +2 pitting edema.",
        "Numbers never issued as SSNs: 000-12-3456, 666-12-3456, 912-34-5678, 219-00-9999, 219-09-0000.",
    ],
)
def test_clinical_numbers_are_not_flagged(text):
    assert privacy.find_phi(text) == []


def test_identifiers_in_a_clinical_note_are_replaced_by_placeholders_and_the_rest_kept():
    note = (
        "Pt seen, DOB: 03/12/1985, MRN: 00482913. On 12/03/2021 HbA1c 7.2% (E11.9); metformin 500 mg. "
        "Lives at 42 Oak Street; call (212) 555-0142 or jane.doe@example.org. SSN 219-09-9999. "
        "Portal: https://portal.example.org/p/17. Dr. Smith agrees."
    )
    assert privacy.redact(note) == (
        "Pt seen, DOB: [DATE_OF_BIRTH], MRN: [MRN]. On 12/03/2021 HbA1c 7.2% (E11.9); metformin 500 mg. "
        "Lives at [STREET_ADDRESS]; call [PHONE] or [EMAIL]. SSN [SSN]. "
        "Portal: [URL]. Dr. Smith agrees."
    )


SFT_RECORDS = [
    {"id": "qa-1", "prompt": "My DOB is 03/12/1985, does that matter for screening?", "response": "No."},
    {"id": "qa-2", "prompt": "What is gout?", "response": "A form of arthritis."},
    {"id": "qa-3", "prompt": "Who do I call?", "response": "Call (212) 555-0142 or 212-555-0143."},
]
IDENTIFIERS = ("03/12/1985", "(212) 555-0142", "212-555-0143")


def test_error_names_record_field_and_type_but_never_the_identifier():
    with pytest.raises(DataError) as err:
        privacy.apply_phi_policy(SFT_RECORDS, "error")
    assert err.value.where == "record qa-1"
    assert "field prompt holds a possible date_of_birth" in str(err.value)
    assert "phone 2, date_of_birth 1" in str(err.value) and "privacy.phi=redact" in str(err.value)
    assert not any(identifier in str(err.value) for identifier in IDENTIFIERS)


def test_warn_keeps_the_text_counts_per_type_and_logs_one_warning_without_the_identifiers(caplog):
    with caplog.at_level(logging.INFO, logger="medtune.privacy"):
        records, counts, locations = privacy.apply_phi_policy(SFT_RECORDS, "warn")
    assert records == SFT_RECORDS
    assert counts == {**NO_PHI, "date_of_birth": 1, "phone": 2}
    assert locations == [
        "record qa-1, field prompt: date_of_birth",
        "record qa-3, field response: phone",
        "record qa-3, field response: phone",
    ]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "phone 2, date_of_birth 1" in caplog.text
    assert not any(identifier in caplog.text for identifier in IDENTIFIERS)


def test_redact_replaces_identifiers_and_keeps_everything_else():
    records, counts, _ = privacy.apply_phi_policy(SFT_RECORDS, "redact")
    assert records[0]["prompt"] == "My DOB is [DATE_OF_BIRTH], does that matter for screening?"
    assert records[1] == SFT_RECORDS[1]
    assert records[2] == {"id": "qa-3", "prompt": "Who do I call?", "response": "Call [PHONE] or [PHONE]."}
    assert counts == {**NO_PHI, "date_of_birth": 1, "phone": 2}


def test_redact_replaces_each_token_of_an_identifier_and_keeps_tokens_and_tags_aligned():
    text = "Asthma follow-up, MRN: 00482913, e-mail jane.doe@example.org or call (212) 555-0142."
    tokens = [word for word, _, _ in data.split_words(text)]
    tags = ["B-Disease" if token == "Asthma" else "O" for token in tokens]
    records, counts, _ = privacy.apply_phi_policy([{"id": "ner-1", "tokens": tokens, "tags": tags}], "redact")
    redacted = records[0]["tokens"]
    assert len(redacted) == len(records[0]["tags"]) == len(tokens) and records[0]["tags"] == tags
    assert " ".join(redacted) == (
        "Asthma follow-up , MRN : [MRN] , e-mail [EMAIL] [EMAIL] [EMAIL] or call [PHONE] [PHONE] [PHONE] [PHONE] ."
    )
    assert counts == {**NO_PHI, "mrn": 1, "email": 1, "phone": 1}


def test_an_unknown_policy_is_a_config_error(conf_project):
    with pytest.raises(ConfigError, match=r"privacy\.phi.*must be 'error' or 'warn' or 'redact', not 'ignore'"):
        compose_params(conf_project, ["privacy.phi=ignore"])


@pytest.mark.parametrize("path", sorted((ROOT / "data" / "raw").glob("*.jsonl")), ids=lambda p: p.name)
def test_the_authored_sample_data_has_no_flagged_identifiers(path):
    """So the default `warn` stays silent on the shipped data (every text field and every token is scanned)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    _, counts, locations = privacy.apply_phi_policy(rows, "warn")
    assert counts == NO_PHI, locations


PLANTED = [
    json.dumps({"id": "qa-90", "question": "My MRN: 00482913, can I see my notes?", "answer": "Ask the clinic."}),
    json.dumps({"id": "qa-91", "question": "Is this normal?", "answer": "Call (212) 555-0142 or jane@example.org."}),
]


def test_prepare_with_redact_writes_placeholders_and_counts_per_type(tmp_path):
    project = make_project(tmp_path, [qa(i) for i in range(28)] + PLANTED, ["privacy.phi=redact"])
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 0, result.stderr
    out = project / "data/prepared/qa"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["phi_policy"] == "redact"
    assert stats["phi"] == {**NO_PHI, "mrn": 1, "phone": 1, "email": 1}
    prepared = "".join((out / f"{name}.jsonl").read_text() for name in data.SPLITS)
    assert "My MRN: [MRN], can I see my notes?" in prepared and "Call [PHONE] or [EMAIL]." in prepared
    for identifier in ("00482913", "(212) 555-0142", "jane@example.org"):
        assert identifier not in prepared + (out / "stats.json").read_text() + result.stderr


def test_prepare_with_warn_keeps_the_text_and_logs_without_the_identifiers(tmp_path):
    project = make_project(tmp_path, [qa(i) for i in range(28)] + PLANTED)  # warn: the default
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 0, result.stderr
    stats = json.loads((project / "data/prepared/qa/stats.json").read_text())
    assert (stats["phi_policy"], stats["phi"]) == ("warn", {**NO_PHI, "mrn": 1, "phone": 1, "email": 1})
    assert "PHI scan: possible identifiers kept" in result.stderr and "00482913" not in result.stderr
    prepared = "".join((project / f"data/prepared/qa/{name}.jsonl").read_text() for name in data.SPLITS)
    assert "00482913" in prepared


def test_prepare_with_error_stops_naming_the_record_and_writes_nothing(tmp_path):
    project = make_project(tmp_path, [qa(i) for i in range(28)] + PLANTED, ["privacy.phi=error"])
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: record qa-90: field prompt holds a possible mrn" in result.stderr
    assert "00482913" not in result.stderr
    assert not (project / "data" / "prepared").exists()


def test_the_history_of_a_chat_record_is_scanned_and_redacted_too():
    history = [
        {"role": "user", "content": "Email the results to jane.doe@example.org please."},
        {"role": "assistant", "content": "I cannot send e-mails."},
    ]
    record = {"id": "c1", "prompt": "Is my HbA1c normal?", "response": "Ask your doctor.", "history": history}
    kept, counts, locations = privacy.apply_phi_policy([record], "redact")
    assert kept[0]["history"] == [
        {"role": "user", "content": "Email the results to [EMAIL] please."},
        {"role": "assistant", "content": "I cannot send e-mails."},
    ]
    assert counts["email"] == 1 and locations == ["record c1, field history: email"]
    assert record["history"][0]["content"].endswith("jane.doe@example.org please.")  # the input is not changed
