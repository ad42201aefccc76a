"""The chat assistant on the tiny model: scope guard first, streamed greedy answers, safety note, history."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from conftest import a_task
from medtune.assistant import SAFETY_NOTE, Assistant, chat_loop
from medtune.generation import generate
from medtune.modeling import load_causal_lm, load_tokenizer
from medtune.scope import OUT_OF_SCOPE_REPLY


class KeywordGuard:
    """Stands in for the embedding classifier (tested in test_scope.py): health questions mention 'fever'."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def in_scope(self, text: str) -> bool:
        self.asked.append(text)
        return "fever" in text


class FailingModel:
    """Stands in for a model whose generation fails, as it does when the GPU runs out of memory."""

    device = torch.device("cpu")

    def generate(self, **kwargs):
        raise RuntimeError("CUDA out of memory")


def health_task():
    task = a_task(system="You answer health questions.", prompt_template="Q: {prompt}")
    task.generation.max_new_tokens = 6
    return task


@pytest.fixture()
def assistant(tiny_model_dir):
    return Assistant(load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir), health_task(), KeywordGuard())


@pytest.fixture()
def failing_assistant(tiny_model_dir):
    return Assistant(FailingModel(), load_tokenizer(tiny_model_dir), health_task(), KeywordGuard())


def test_an_off_topic_question_gets_the_fixed_reply_without_generating(failing_assistant):
    # generating would raise the model's error
    assert list(failing_assistant.reply([], "What is the capital of France?")) == [OUT_OF_SCOPE_REPLY]


def test_a_failed_generation_reaches_the_caller_instead_of_leaving_it_waiting(failing_assistant):
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        list(failing_assistant.reply([], "What does a fever of 39 C mean?"))


def test_the_streamed_answer_is_the_greedy_generation_followed_by_the_safety_note(assistant):
    chunks = list(assistant.reply([], "What does a fever of 39 C mean?"))

    prompt = assistant.tokenizer.apply_chat_template(
        assistant.messages([], "What does a fever of 39 C mean?"), tokenize=False, add_generation_prompt=True
    )
    expected = generate(assistant.model, assistant.tokenizer, [prompt], max_new_tokens=6, batch_size=1).texts[0]
    assert "".join(chunks[:-1]).strip() == expected
    assert chunks[-1] == "\n\n" + SAFETY_NOTE


def test_messages_carry_the_system_prompt_the_history_and_the_task_template(assistant):
    history = [{"role": "user", "content": "Q: fever?"}, {"role": "assistant", "content": "Drink water."}]
    assert assistant.messages(history, "and a rash?") == [
        {"role": "system", "content": "You answer health questions."},
        *history,
        {"role": "user", "content": "Q: and a rash?"},
    ]


def test_chat_loop_keeps_history_resets_it_and_exits(assistant, monkeypatch):
    seen: list[list[dict]] = []
    original = assistant.messages
    monkeypatch.setattr(assistant, "messages", lambda h, q: seen.append(list(h)) or original(h, q))
    inputs = iter(
        ["fever for two days", "capital of France?", "is the fever dangerous?", "/reset", "fever again", "/exit"]
    )
    out = io.StringIO()

    chat_loop(assistant, lambda prompt: next(inputs), Console(file=out, width=100))

    assert [len(h) for h in seen] == [0, 2, 0]  # the refusal is not history; /reset empties it
    assert seen[1][0] == {"role": "user", "content": "Q: fever for two days"}
    assert SAFETY_NOTE not in seen[1][1]["content"]
    assert "I can only help with questions about human health" in out.getvalue()
    assert assistant.guard.asked == [
        "fever for two days",
        "capital of France?",
        "is the fever dangerous?",
        "fever again",
    ]


class FourSections:
    """Stands in for the model: a terminology answer, one section per line."""

    def reply(self, history, question):
        yield from ["**Definition**: a slow heart rate.\n", "**Explanation**: under 60 beats per minute.\n"]
        yield "**Clinical Relevance**: can cause fainting.\n**Note**: not medical advice."

    def remembered(self, question, shown):
        return []


def test_chat_shows_each_section_of_an_answer_on_its_own_line():
    inputs = iter(["bradycardia", "/exit"])
    out = io.StringIO()

    chat_loop(FourSections(), lambda prompt: next(inputs), Console(file=out, width=100))

    lines = [line.strip() for line in out.getvalue().splitlines()]
    sections = [
        "Definition: a slow heart rate.",
        "Explanation: under 60 beats per minute.",
        "Clinical Relevance: can cause fainting.",
        "Note: not medical advice.",
    ]
    assert [section for section in sections if section not in lines] == []
