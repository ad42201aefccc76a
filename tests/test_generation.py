"""Batched greedy generation equals one-at-a-time generation; perplexity matches the model's own loss."""

from __future__ import annotations

import math

import torch

from medtune.generation import generate, perplexity
from medtune.modeling import load_causal_lm, load_tokenizer
from medtune.tasks import render_prompt, tokenize_sft

QUESTIONS = ["What is gout?", "Which test measures long-term blood sugar control?", "Why?", "Where is the liver?"]


def test_batched_generation_equals_one_prompt_at_a_time(tiny_model_dir):
    model, tok = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    prompts = [render_prompt(tok, "Be brief.", q) for q in QUESTIONS]
    batched = generate(model, tok, prompts, max_new_tokens=12, batch_size=4)
    singles = [generate(model, tok, [p], max_new_tokens=12, batch_size=1).texts[0] for p in prompts]
    assert batched.texts == singles
    assert batched.new_tokens == 4 * 12  # a random model never emits the end-of-turn token this early
    assert batched.ms_per_token > 0


def test_perplexity_is_exp_of_the_models_mean_response_loss(tiny_model_dir):
    model, tok = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    records = [{"id": str(i), "prompt": q, "response": "An answer of some length."} for i, q in enumerate(QUESTIONS)]
    examples = [tokenize_sft(tok, r, "Be brief.", "{prompt}", 512)[0] for r in records]
    with torch.no_grad():
        one = examples[0]
        loss = model(input_ids=torch.tensor([one["input_ids"]]), labels=torch.tensor([one["labels"]])).loss.item()
    assert math.isclose(perplexity(model, [one], 4, tok.pad_token_id), math.exp(loss), rel_tol=1e-5)
    # padding in a batch must not change the value (all examples have equally many response tokens)
    batched = perplexity(model, examples, 4, tok.pad_token_id)
    singles = [math.log(perplexity(model, [e], 1, tok.pad_token_id)) for e in examples]
    assert math.isclose(batched, math.exp(sum(singles) / len(singles)), rel_tol=1e-5)
