"""How a prepared record becomes model input, per task kind.

`sft`: system + prompt as the chat's user turn, response as the assistant turn, rendered by the base
model's own chat template; the loss is on the response tokens only (prompt tokens get label -100).
"""

from __future__ import annotations

from typing import Any

from medtune.errors import ConfigError, ModelError

IGNORE_INDEX = -100  # label value the loss skips (transformers / trl convention)


def user_message(template: str, prompt: str) -> str:
    """The user turn: the task's `prompt_template` with the record's prompt in place of `{prompt}`."""
    if "{prompt}" not in template:
        raise ConfigError("tasks.<task>.prompt_template", f"{template!r} must contain {{prompt}}")
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


def tokenize_sft(tokenizer: Any, record: dict, system: str, template: str, max_length: int) -> tuple[dict | None, bool]:
    """Token ids and labels for one `{"id", "prompt", "response"}` record.

    Labels are the token ids on the response (and the end-of-turn tokens after it) and -100 elsewhere; a
    token is part of the response when it starts at or after the end of the rendered prompt. Returns
    `(example, truncated)`; the example is None when truncation to `max_length` left no response token.
    """
    user = user_message(template, record["prompt"])
    prompt_text = render_prompt(tokenizer, system, user)
    full_text = tokenizer.apply_chat_template(chat_messages(system, user, record["response"]), tokenize=False)
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
