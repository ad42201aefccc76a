"""`medtune predict` on a file: any task kind, batch by batch, and an interrupted run resumes where it stopped."""

from __future__ import annotations

import json

import pytest

from conftest import a_task, write_lines
from medtune import generation
from medtune.assistant import SAFETY_NOTE
from medtune.errors import DataError
from medtune.generation import Generations
from medtune.modeling import load_token_classifier, load_tokenizer
from medtune.predict import Predictor, finished_ids, predict_file, read_inputs
from medtune.tasks import render_prompt

LABELS = ["O", "B-Disease", "I-Disease"]


def qa_task():
    task = a_task(system="Answer briefly.", prompt_template="{prompt}")
    task.generation.max_new_tokens = 4
    return task


def texts_file(tmp_path, n: int):
    return write_lines(tmp_path / "in.jsonl", [json.dumps({"id": f"q{i}", "text": f"Question {i}?"}) for i in range(n)])


def test_a_generative_task_gets_the_greedy_answer_per_row_and_keeps_the_input_fields(tmp_path, tiny_model_dir):
    predictor = Predictor(qa_task(), tiny_model_dir)

    written, skipped = predict_file(predictor, texts_file(tmp_path, 3), tmp_path / "out.jsonl", 2)

    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    prompts = [render_prompt(predictor.tokenizer, "Answer briefly.", f"Question {i}?") for i in range(3)]
    expected = generation.generate(predictor.model, predictor.tokenizer, prompts, max_new_tokens=4, batch_size=2)
    assert (written, skipped) == (3, 0)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"]
    assert [r["text"] for r in rows] == ["Question 0?", "Question 1?", "Question 2?"]
    assert [r["output"] for r in rows] == expected.texts


def test_an_answer_without_a_disclaimer_gets_the_safety_note_beside_it(tiny_model_dir, monkeypatch):
    answers = ["Rest and drink fluids.", "Rest. This is not medical advice; see a doctor if it persists."]
    monkeypatch.setattr(generation, "generate", lambda *args, **kwargs: Generations(answers, 0, 0.0))

    results = Predictor(qa_task(), tiny_model_dir).predict(["Flu?", "Cold?"], batch_size=2)

    assert results == [  # the answers themselves unchanged, as evaluation scores them
        {"output": answers[0], "safety_note": SAFETY_NOTE},
        {"output": answers[1], "safety_note": None},
    ]


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


def test_token_classification_rows_get_entities_with_offsets(tmp_path, tiny_model_dir, monkeypatch):
    model_dir = tmp_path / "ner-model"
    load_token_classifier(tiny_model_dir, LABELS, seed=0).save_pretrained(model_dir)
    load_tokenizer(tiny_model_dir).save_pretrained(model_dir)
    task = a_task(kind="token_classification", labels=LABELS, max_length=64)
    source = write_lines(tmp_path / "notes.jsonl", ['{"text": "Known asthma, no fever."}', "", '{"text": ""}'])
    # a random model tags at random: the tagger's answer for the words Known asthma , no fever . is fixed here
    tags = ["O", "B-Disease", "O", "O", "B-Disease", "O"]
    monkeypatch.setattr(generation, "predict_tags", lambda model, examples, labels, batch, ids: [tags for _ in ids])

    predict_file(Predictor(task, model_dir), source, tmp_path / "out.jsonl", 8)

    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["line-1", "line-3"]  # line numbers, the blank line counted
    assert rows[0]["entities"] == [
        {"text": "asthma", "type": "Disease", "start": 6, "end": 12},
        {"text": "fever", "type": "Disease", "start": 17, "end": 22},
    ]
    assert rows[1]["entities"] == []


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


def test_rows_of_a_json_list_are_named_by_record(tmp_path):
    source = tmp_path / "in.json"
    source.write_text('[\n  {"text": "Fever?"},\n  {"text": "Cough?"}\n]', encoding="utf-8")
    assert [row["id"] for row in read_inputs(source)] == ["record-1", "record-2"]


@pytest.mark.parametrize(
    ("damaged", "message"),
    [
        (
            '{"id": "q0", "output": "a"}\n{"id": "q1", "outp\n{"id": "q2", "output": "c"}\n',
            r"out\.jsonl:2: not valid JSON",
        ),
        ('{"id": "q0", "output": "a"}\n{"output": "b"}\n', r'out\.jsonl:2: not a result row.*"id"'),
        ('{"id": "q0", "output": "a"}\n["q1"]\n', r'out\.jsonl:2: not a result row.*"id"'),
    ],
)
def test_a_damaged_output_is_a_data_error_naming_the_line_and_is_left_as_it_is(tmp_path, damaged, message):
    out = tmp_path / "out.jsonl"
    out.write_text(damaged + '{"id": "q3", "ou', encoding="utf-8")  # and a last line cut short by a kill

    with pytest.raises(DataError, match=message):
        finished_ids(out)
    assert out.read_text(encoding="utf-8") == damaged + '{"id": "q3", "ou'
