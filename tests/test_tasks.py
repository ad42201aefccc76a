"""The sft task: chat template from the base model, loss only on the response."""

from __future__ import annotations

from medtune.modeling import load_tokenizer
from medtune.tasks import IGNORE_INDEX, render_prompt, tokenize_sft

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
