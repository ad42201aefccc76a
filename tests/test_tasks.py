"""The sft task: chat template from the base model, loss only on the response."""

from __future__ import annotations

from medtune.modeling import load_tokenizer
from medtune.tasks import IGNORE_INDEX, render_prompt, render_record_prompt, tokenize_sft

RECORD = {"id": "q1", "prompt": "What is gout?", "response": "A painful arthritis caused by urate crystals."}
SYSTEM = "You are a medical information assistant."


def test_labels_cover_exactly_the_response_and_end_of_turn(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    example, truncated = tokenize_sft(tok, RECORD, SYSTEM, "{prompt}", max_length=1024)
    prompt_len = len(tok(render_prompt(tok, SYSTEM, RECORD["prompt"]), add_special_tokens=False).input_ids)
    assert not truncated
    assert example["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert example["labels"][prompt_len:] == example["input_ids"][prompt_len:]
    assert tok.decode(example["labels"][prompt_len:]) == RECORD["response"] + "<|im_end|>\n"
    assert tok.decode(example["input_ids"]).startswith("<|im_start|>system\n" + SYSTEM)


def test_truncation_is_reported_and_a_response_cut_off_entirely_drops_the_example(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    prompt_len = len(tok(render_prompt(tok, SYSTEM, RECORD["prompt"]), add_special_tokens=False).input_ids)
    example, truncated = tokenize_sft(tok, RECORD, SYSTEM, "{prompt}", max_length=prompt_len + 3)
    assert truncated and len(example["input_ids"]) == prompt_len + 3
    assert sum(label != IGNORE_INDEX for label in example["labels"]) == 3
    assert tokenize_sft(tok, RECORD, SYSTEM, "{prompt}", max_length=prompt_len) == (None, True)


CHAT_RECORD = {  # a prepared chat-format record (data.to_sft_records with columns {messages: ...})
    "id": "c1",
    "prompt": "Can I take ibuprofen for a headache?",
    "response": "Ask your doctor first: ibuprofen raises the bleeding risk with warfarin.",
    "system": "You are a careful pharmacist.",
    "history": [
        {"role": "user", "content": "I take warfarin."},
        {"role": "assistant", "content": "Noted. Warfarin is an anticoagulant."},
    ],
}


def test_a_multi_turn_record_is_labelled_on_its_last_assistant_turn_only(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    example, truncated = tokenize_sft(tok, CHAT_RECORD, SYSTEM, "Patient asks: {prompt}", max_length=1024)
    prompt = render_record_prompt(tok, CHAT_RECORD, SYSTEM, "Patient asks: {prompt}")
    prompt_len = len(tok(prompt, add_special_tokens=False).input_ids)
    assert not truncated
    assert example["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert example["labels"][prompt_len:] == example["input_ids"][prompt_len:]
    assert tok.decode(example["labels"][prompt_len:]) == CHAT_RECORD["response"] + "<|im_end|>\n"
    text = tok.decode(example["input_ids"])
    # the record's own system prompt replaces the task's; the template wraps every user turn, history included
    assert text.startswith("<|im_start|>system\nYou are a careful pharmacist.<|im_end|>") and SYSTEM not in text
    turns = ["Patient asks: I take warfarin.", "Noted. Warfarin is an anticoagulant.", "Patient asks: Can I take"]
    assert [text.index(t) for t in turns] == sorted(text.index(t) for t in turns)
    assert prompt.endswith("<|im_start|>assistant\n") and text.startswith(prompt)


def test_a_plain_record_renders_its_prompt_as_before(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    assert render_record_prompt(tok, RECORD, SYSTEM, "{prompt}") == render_prompt(tok, SYSTEM, RECORD["prompt"])
