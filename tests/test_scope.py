"""The scope guard: read and check the authored question sets, fit and reload the classifier, measure it."""

from __future__ import annotations

import pytest

from conftest import ROOT, write_lines
from medtune.errors import DataError
from medtune.scope import ScopeClassifier, read_scope_questions, scope_metrics


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "q1", "text": "   ", "in_scope": true}', 'non-empty string "text"'),
        ('{"id": "q1", "text": "Is flu contagious?", "in_scope": "yes"}', '"in_scope" must be true or false'),
    ],
)
def test_a_bad_question_names_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "scope.jsonl", ['{"id": "q0", "text": "What is a fever?", "in_scope": true}', line])
    with pytest.raises(DataError, match=rf"scope\.jsonl:2: .*{message}"):
        read_scope_questions(path)


def test_the_authored_sets_are_balanced_and_disjoint():
    train = read_scope_questions(ROOT / "data/raw/scope_train.jsonl")
    test = read_scope_questions(ROOT / "data/raw/scope.jsonl")
    for questions in (train, test):  # as many off-topic questions as health ones
        assert sum(q["in_scope"] for q in questions) == sum(not q["in_scope"] for q in questions)
    assert len(test) >= 200
    assert not {q["text"].lower() for q in train} & {q["text"].lower() for q in test}
    assert any(q["text"] == "What is the capital of France?" and not q["in_scope"] for q in test)


def test_classifier_separates_and_round_trips_through_json(tmp_path):
    vectors = [[1.0, 0.1], [0.9, -0.1], [0.8, 0.0], [-1.0, 0.2], [-0.9, 0.0], [-0.7, -0.1]]
    classifier = ScopeClassifier.fit(vectors, [True, True, True, False, False, False], c=10.0, threshold=0.5)
    classifier.save(tmp_path / "classifier.json")

    loaded = ScopeClassifier.load(tmp_path / "classifier.json")

    assert loaded == classifier
    assert loaded.probability([1.0, 0.0]) > 0.5 > loaded.probability([-1.0, 0.0])


def test_metrics_count_both_kinds_of_error():
    questions = [{"in_scope": True}] * 3 + [{"in_scope": False}] * 2
    # health questions: 1 answered, 2 refused; off-topic ones: 1 answered, 1 refused
    metrics = scope_metrics(questions, [0.9, 0.2, 0.1, 0.7, 0.3], threshold=0.5)
    assert metrics["false_refusal_rate"] == pytest.approx(2 / 3)
    assert metrics["false_acceptance_rate"] == 0.5
    assert metrics["accuracy"] == 0.4
    assert (metrics["in_scope_questions"], metrics["out_of_scope_questions"]) == (3, 2)


def test_guard_trained_on_the_authored_set_answers_health_questions_only(authored_guard):
    guard = authored_guard
    assert guard.in_scope("What are the common side effects of metformin?")
    assert guard.in_scope("my 3 year old has had a fever of 39.5 since yesterday, what should i do")
    assert not guard.in_scope("What is the capital of France?")
    assert not guard.in_scope("How do I reverse a list in Python?")
