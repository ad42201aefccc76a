"""Named-entity recognition as token classification: readers, IOB2 validation, sub-token alignment, windows,
seqeval scores and entity spans."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, write_lines
from medtune import data, generation
from medtune.config import load_params
from medtune.errors import DataError
from medtune.metrics import seqeval_scores, tag_confusion
from medtune.modeling import load_tokenizer
from medtune.tasks import IGNORE_INDEX, align_labels_to_subwords, tokenize_tagged

LABELS = list(load_params(ROOT / "params.yaml").tasks.ner.labels)
TOKENS_TAGS = {"tokens": "tokens", "tags": "tags"}
HF_TAG_NAMES = ["O", "B-Disease", "I-Disease", "B-Symptom", "I-Symptom"]  # a hub dataset's labels (data.tag_names)


def read(path, columns=TOKENS_TAGS, **kw) -> list[dict]:
    rows = data.read_file_rows(path)
    return data.to_token_records(rows, columns, kw.pop("id_column", None), kw.pop("on_invalid", "error"), LABELS, **kw)[
        0
    ]


def sentence(tokens: str, tags: str, **extra) -> str:
    return json.dumps({**extra, "tokens": tokens.split(), "tags": tags.split()})


def test_jsonl_tokens_and_tags(tmp_path):
    path = write_lines(tmp_path / "ner.jsonl", [sentence("Started on metformin .", "O O B-Medication O", id="a")])
    assert read(path, id_column="id") == [
        {"id": "a", "tokens": ["Started", "on", "metformin", "."], "tags": ["O", "O", "B-Medication", "O"]}
    ]


def test_hugging_face_ner_tags_with_integer_labels(tmp_path):
    row = {"words": ["Chest", "pain", "today"], "ner_tags": [3, 4, 0]}
    path = write_lines(tmp_path / "ner.jsonl", [json.dumps(row)])
    records = read(
        path,
        {"tokens": "words", "tags": "ner_tags"},
        tag_names=HF_TAG_NAMES,
    )
    assert records[0]["tags"] == ["B-Symptom", "I-Symptom", "O"]
    with pytest.raises(DataError, match=r"ner\.jsonl:1: tags are integers: set tasks\.<task>\.data\.tag_names"):
        read(path, {"tokens": "words", "tags": "ner_tags"})


@pytest.mark.parametrize(("tags", "wrong"), [([3, -1, 0], -1), ([5, 0, 7], 5)])
def test_an_integer_tag_out_of_range_is_named(tmp_path, tags, wrong):
    path = write_lines(tmp_path / "ner.jsonl", [json.dumps({"words": ["Chest", "pain", "today"], "ner_tags": tags})])
    with pytest.raises(DataError, match=rf"ner\.jsonl:1: tag ids must be in 0\.\.4, got {wrong}$"):
        read(
            path,
            {"tokens": "words", "tags": "ner_tags"},
            tag_names=HF_TAG_NAMES,
        )


def test_conll_skips_docstart_and_reads_the_last_column_as_the_tag(tmp_path):
    path = write_lines(
        tmp_path / "ner.conll",
        [
            "-DOCSTART-\tO",
            "",
            "Patient\tO",
            "denies\tO",
            "chest\tB-Symptom",
            "pain\tI-Symptom",
            "",
            "Aspirin NN B-NP B-Medication",
            "stopped VBD B-VP O",
        ],
    )
    records = read(path)
    assert [r["tokens"] for r in records] == [["Patient", "denies", "chest", "pain"], ["Aspirin", "stopped"]]
    assert records[1]["tags"] == ["B-Medication", "O"]
    write_lines(tmp_path / "bad.conll", ["Patient\tO", "denies\tO", "chestpain", ""])
    with pytest.raises(DataError, match=r"bad\.conll:3: expected `token<TAB>tag`"):
        read(tmp_path / "bad.conll")


def test_seed_format_text_with_entity_words(tmp_path):
    row = {
        "text": "Type 2 diabetes, treated with metformin.",
        "labels": [{"word": "type 2 diabetes", "entity": "DISEASE"}, {"word": "metformin", "entity": "medication"}],
    }
    path = write_lines(tmp_path / "seed.jsonl", [json.dumps(row)])
    [record] = read(path, {"text": "text", "entities": "labels"})
    assert record["tokens"] == ["Type", "2", "diabetes", ",", "treated", "with", "metformin", "."]
    assert record["tags"] == ["B-Disease", "I-Disease", "I-Disease", "O", "O", "O", "B-Medication", "O"]
    row["labels"].append({"word": "insulin", "entity": "Medication"})
    write_lines(path, [json.dumps(row)])
    with pytest.raises(DataError, match=r"seed\.jsonl:1: entity 3: 'insulin' is not in the text"):
        read(path, {"text": "text", "entities": "labels"})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (sentence("chest pain", "B-Symptom"), "2 tokens but 1 tags"),
        (sentence("chest pain", "B-Symptom I-Sign"), "token 2: unknown tag 'I-Sign'"),
        (sentence("chest pain", "B-Symptom Symptom"), "token 2: malformed tag 'Symptom'"),
        (sentence("severe pain", "O I-Symptom"), "token 2: I-Symptom does not follow B-Symptom or I-Symptom"),
        (sentence("aspirin pain", "B-Medication I-Symptom"), "token 2: I-Symptom does not follow"),
        (json.dumps({"tokens": [], "tags": []}), "empty sentence"),
    ],
)
def test_invalid_sentences_name_file_line_and_problem(tmp_path, line, message):
    path = write_lines(tmp_path / "ner.jsonl", [sentence("Fever .", "B-Symptom O"), line])
    with pytest.raises(DataError, match=rf"ner\.jsonl:2: {message}"):
        read(path)


def test_orphan_inside_tags_can_be_repaired_or_dropped(tmp_path):
    path = write_lines(tmp_path / "ner.jsonl", [sentence("severe chest pain", "O I-Symptom I-Symptom")])
    assert read(path, orphan_inside="repair")[0]["tags"] == ["O", "B-Symptom", "I-Symptom"]
    write_lines(path, [sentence("Fever .", "B-Symptom O"), sentence("severe pain", "O I-Symptom")])
    assert len(read(path, on_invalid="drop")) == 1


def test_each_word_labels_only_its_first_sub_token(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)  # byte-level, few merges ("in" is one): words span many tokens
    ids, labels = align_labels_to_subwords(tok, ["Metformin", "500", "mg"], [3, 0, 0])
    assert tok.decode(ids) == "Metformin 500 mg"
    assert [i for i, label in enumerate(labels) if label != IGNORE_INDEX] == [0, 9, 13]  # M, 5, m
    assert [labels[i] for i in (0, 9, 13)] == [3, 0, 0]


def test_long_sentences_are_split_into_windows_at_word_boundaries(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    record = {
        "id": "s1",
        "tokens": ["aspirin", "and", "warfarin", "raise", "bleeding", "risk"],
        "tags": ["B-Medication", "O", "B-Medication", "O", "O", "O"],
    }
    label_ids = {label: i for i, label in enumerate(LABELS)}
    windows = tokenize_tagged(tok, record, label_ids, max_length=16)
    assert [w["window"] for w in windows] == list(range(len(windows))) and len(windows) > 1
    assert all(len(w["input_ids"]) <= 16 for w in windows)
    assert "".join(tok.decode(w["input_ids"]) for w in windows) == "aspirin and warfarin raise bleeding risk"
    labelled = [label for w in windows for label in w["labels"] if label != IGNORE_INDEX]
    assert labelled == [label_ids[t] for t in record["tags"]]  # every word labelled exactly once, in order


def test_seqeval_strict_scores_per_type():
    gold = [["B-Disease", "I-Disease", "O", "B-Medication"], ["B-Symptom", "O"]]
    pred = [["B-Disease", "I-Disease", "O", "O"], ["I-Symptom", "O"]]  # orphan I- is no entity in strict mode
    scores = seqeval_scores(gold, pred)
    assert (scores["precision"], scores["recall"]) == (1.0, pytest.approx(1 / 3))
    assert scores["per_type"]["Disease"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert scores["per_type"]["Medication"]["support"] == 1 and scores["per_type"]["Medication"]["recall"] == 0.0
    assert tag_confusion(gold, pred)[3] == {"actual": "B-Medication", "predicted": "O"}


def test_entities_carry_character_offsets(tiny_model_dir, monkeypatch):
    """What `medtune predict` prints for a text, given the tagger's tag for each word."""
    texts = ["Type 2 diabetes, on metformin.", "  ", "Fever"]  # the second has no words
    word_tags = {  # `predict_tags` answers per text that has words, in order
        "0": ["B-Disease", "I-Disease", "I-Disease", "O", "O", "B-Medication", "O"],
        "2": ["I-Symptom"],  # an I- that continues nothing starts an entity, as seqeval's default mode reads it
    }
    monkeypatch.setattr(
        generation, "predict_tags", lambda model, examples, labels, batch, ids: [word_tags[i] for i in ids]
    )
    found = generation.extract_entities(None, load_tokenizer(tiny_model_dir), texts, LABELS, 64, batch_size=2)
    assert found == [
        [
            {"text": "Type 2 diabetes", "type": "Disease", "start": 0, "end": 15},
            {"text": "metformin", "type": "Medication", "start": 20, "end": 29},
        ],
        [],
        [{"text": "Fever", "type": "Symptom", "start": 0, "end": 5}],
    ]
