"""`medtune predict` on a file: any task kind, batch by batch, and an interrupted run resumes where it stopped."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from conftest import write_lines
from medtune.config import TaskConfig
from medtune.errors import DataError
from medtune.modeling import load_token_classifier, load_tokenizer
from medtune.predict import Predictor, finished_ids, predict_file, read_inputs

LABELS = ["O", "B-Disease", "I-Disease"]


def qa_task():
    task = OmegaConf.structured(TaskConfig(system="Answer briefly.", prompt_template="{prompt}"))
    task.generation.max_new_tokens = 4
    return task


def texts_file(tmp_path, n: int):
    return write_lines(tmp_path / "in.jsonl", [json.dumps({"id": f"q{i}", "text": f"Question {i}?"}) for i in range(n)])


def test_a_generative_task_gets_an_output_per_row_and_keeps_the_input_fields(tmp_path, tiny_model_dir):
    written, skipped = predict_file(
        Predictor(qa_task(), tiny_model_dir), texts_file(tmp_path, 3), tmp_path / "out.jsonl", 2
    )

    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (written, skipped) == (3, 0)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"]
    assert all(isinstance(r["output"], str) and r["text"].startswith("Question") for r in rows)


def test_an_interrupted_run_resumes_and_keeps_what_was_done(tmp_path, tiny_model_dir):
    out = tmp_path / "out.jsonl"
    done = [
        json.dumps({"id": "q0", "text": "Question 0?", "output": "kept"}),
        json.dumps({"id": "q1", "text": "x", "output": "kept"}),
    ]
    out.write_text("\n".join(done) + '\n{"id": "q2", "te')  # killed in the middle of writing q2

    written, skipped = predict_file(Predictor(qa_task(), tiny_model_dir), texts_file(tmp_path, 4), out, 2)

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (written, skipped) == (2, 2)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3"]
    assert [r["output"] for r in rows[:2]] == ["kept", "kept"]


def test_token_classification_rows_get_entities_with_offsets(tmp_path, tiny_model_dir):
    model_dir = tmp_path / "ner-model"
    load_token_classifier(tiny_model_dir, LABELS, seed=0).save_pretrained(model_dir)
    load_tokenizer(tiny_model_dir).save_pretrained(model_dir)
    task = OmegaConf.structured(TaskConfig(kind="token_classification", labels=LABELS, max_length=64))
    source = write_lines(tmp_path / "notes.jsonl", ['{"text": "Known asthma, no fever."}', '{"text": ""}'])

    predict_file(Predictor(task, model_dir), source, tmp_path / "out.jsonl", 8)

    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["line-1", "line-2"]
    assert rows[1]["entities"] == []
    for entity in rows[0]["entities"]:
        assert rows[0]["text"][entity["start"] : entity["end"]] == entity["text"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"text": "ok"}', '{"note": "no text"}'], r"in\.jsonl:2: .*text"),
        (['{"id": "a", "text": "x"}'] * 2, "duplicate id"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        read_inputs(write_lines(tmp_path / "in.jsonl", lines))


def test_no_output_yet_means_nothing_is_done(tmp_path):
    assert finished_ids(tmp_path / "missing.jsonl") == set()
