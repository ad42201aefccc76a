"""How a prepared record becomes model input, per task kind.

`sft`: system + prompt as the chat's user turn, response as the assistant turn, rendered by the base
model's own chat template; the loss is on the response tokens only (prompt tokens get label -100). A record
from chat rows may carry its own `system` (replacing the task's) and `history` (earlier user/assistant turns,
rendered before the prompt and never labelled).
`token_classification`: the words joined by spaces; the first sub-token of each word carries the word's
tag id, the others -100; sentences longer than `max_length` tokens are cut into windows at word boundaries.
"""

from __future__ import annotations

from typing import Any

from medtune.config import TaskConfig
from medtune.errors import ModelError

IGNORE_INDEX = -100  # label value the loss skips (transformers / trl convention)


def user_message(template: str, prompt: str) -> str:
    """The user turn: the task's `prompt_template` (it holds `{prompt}`: config checks that) with the record's
    prompt in its place."""
    return template.replace("{prompt}", prompt)


def chat_messages(system: str, user: str, response: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def render_prompt(tokenizer: Any, system: str, user: str) -> str:
    """The text the model sees before it starts answering (ends with the assistant header)."""
    return tokenizer.apply_chat_template(chat_messages(system, user), tokenize=False, add_generation_prompt=True)


def prompt_messages(record: dict, system: str, template: str) -> list[dict[str, str]]:
    """The turns of a prepared sft record before its response: its own `system` or else the task's, its `history`
    and its prompt. `template` (the task's prompt_template) makes every user turn, as the chat assistant does."""
    system = record.get("system", system)
    messages = [{"role": "system", "content": system}] if system else []
    for turn in record.get("history", ()):
        content = user_message(template, turn["content"]) if turn["role"] == "user" else turn["content"]
        messages.append({"role": turn["role"], "content": content})
    messages.append({"role": "user", "content": user_message(template, record["prompt"])})
    return messages


def render_record_prompt(tokenizer: Any, record: dict, system: str, template: str) -> str:
    """`render_prompt` for a prepared record (`prompt_messages`): what evaluation generates its answer after."""
    messages = prompt_messages(record, system, template)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_sft(tokenizer: Any, record: dict, system: str, template: str, max_length: int) -> tuple[dict | None, bool]:
    """Token ids and labels for one `{"id", "prompt", "response"}` record (with `system` and `history`, if any).

    Labels are the token ids on the response (and the end-of-turn tokens after it) and -100 elsewhere; a
    token is part of the response when it starts at or after the end of the rendered prompt, so the history's
    assistant turns are never labelled. Returns `(example, truncated)`; the example is None when truncation to
    `max_length` left no response token.
    """
    messages = prompt_messages(record, system, template)
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_messages = [*messages, {"role": "assistant", "content": record["response"]}]
    full_text = tokenizer.apply_chat_template(full_messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ModelError(
            "the base model's chat template does not render the prompt as a prefix of the full conversation, "
            "so the prompt tokens cannot be masked; use a model whose template does, or set one in the tokenizer"
        )
    enc = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    offsets = enc["offset_mapping"]
    labels = [t if start >= len(prompt_text) else IGNORE_INDEX for t, (start, _) in zip(ids, offsets, strict=True)]
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None, truncated
    return {"id": record["id"], "input_ids": ids, "labels": labels}, truncated


def align_labels_to_subwords(tokenizer: Any, words: list[str], tag_ids: list[int]) -> tuple[list[int], list[int]]:
    """Token ids of the words joined by single spaces, and labels: the tag id on each word's first sub-token.

    Words are mapped through character offsets rather than `is_split_into_words`, so it works the same for
    every fast tokenizer (byte-level BPE tokenizers ignore `add_prefix_space` for pre-split words).
    """
    char_word: list[int] = []
    for i, word in enumerate(words):
        char_word += [i] * len(word) + [-1]  # -1: the space after the word
    enc = tokenizer(" ".join(words), add_special_tokens=False, return_offsets_mapping=True)
    labels, seen = [], set()
    for start, end in enc["offset_mapping"]:
        word = next((char_word[c] for c in range(start, end) if char_word[c] >= 0), -1)
        labels.append(tag_ids[word] if word >= 0 and word not in seen else IGNORE_INDEX)
        seen.add(word)
    if len(seen - {-1}) != len(words):
        raise ModelError(f"the tokenizer merged words across spaces in {' '.join(words)!r}; cannot align labels")
    return enc["input_ids"], labels


def tokenize_tagged(tokenizer: Any, record: dict, label_ids: dict[str, int], max_length: int) -> list[dict]:
    """One example per window of `record` (usually one): `{"id", "window", "input_ids", "labels"}`."""
    ids, labels = align_labels_to_subwords(tokenizer, record["tokens"], [label_ids[t] for t in record["tags"]])
    word_starts = [i for i, label in enumerate(labels) if label != IGNORE_INDEX] + [len(ids)]
    windows, start = [], 0
    for a, b in zip(word_starts, word_starts[1:], strict=False):
        if b - start > max_length:  # the word starting at `a` does not fit: close the window before it
            if a == start:
                raise ModelError(f"record {record['id']}: one word is longer than max_length={max_length} tokens")
            windows.append((start, a))
            start = a
    windows.append((start, len(ids)))
    return [
        {"id": record["id"], "window": k, "input_ids": ids[a:b], "labels": labels[a:b]}
        for k, (a, b) in enumerate(windows)
    ]


def tokenize_records(tokenizer: Any, records: list[dict], task: TaskConfig, max_length: int) -> tuple[list[dict], dict]:
    """Examples of at most `max_length` tokens for one split of `task` (by its kind), and counts for stats.json."""
    if task.kind == "token_classification":
        label_ids = {label: i for i, label in enumerate(task.labels)}
        per_record = [tokenize_tagged(tokenizer, r, label_ids, max_length) for r in records]
        examples = [e for windows in per_record for e in windows]
        counts = {"sentences_split_into_windows": sum(len(w) > 1 for w in per_record)}
    else:  # sft
        results = [tokenize_sft(tokenizer, r, task.system, task.prompt_template, max_length) for r in records]
        examples = [e for e, _ in results if e is not None]
        counts = {"truncated": sum(t for _, t in results), "dropped_no_response_left": len(results) - len(examples)}
    return examples, {
        "records": len(records),
        "examples": len(examples),
        "tokens": sum(len(e["input_ids"]) for e in examples),
        "labelled_tokens": sum(sum(t != IGNORE_INDEX for t in e["labels"]) for e in examples),
        "max_tokens": max((len(e["input_ids"]) for e in examples), default=0),
        **counts,
    }
