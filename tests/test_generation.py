"""Batched greedy generation equals one-at-a-time generation; perplexity matches the model's own loss."""

from __future__ import annotations

import math

import torch

from medtune.generation import example_nll, generate, perplexity
from medtune.modeling import load_causal_lm, load_tokenizer
from medtune.tasks import IGNORE_INDEX, render_prompt, tokenize_sft
from medtune.training import completion_loss, make_batch

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


def test_each_examples_nll_is_its_own_loss_and_they_add_up_to_the_training_loss(tiny_model_dir):
    """Evaluate's per-example statistics (example_nll) and the training loss (completion_loss) are one computation,
    medtune.generation.response_nll: summed over the examples, the one gives the other."""
    model, tok = load_causal_lm(tiny_model_dir), load_tokenizer(tiny_model_dir)
    answers = ["Yes.", "An answer of some length.", "A longer answer, with a clause or two in it, and a list: a, b."]
    pairs = enumerate(zip(QUESTIONS[:3], answers, strict=True))
    records = [{"id": str(i), "prompt": q, "response": a} for i, (q, a) in pairs]
    examples = [tokenize_sft(tok, r, "Be brief.", "{prompt}", 512)[0] for r in records]
    rows = example_nll(model, examples, 2, tok.pad_token_id)  # a batch of two, padded, and one alone
    batch = make_batch(examples, causal=True, padding_free=False)
    labels = batch.pop("labels")
    with torch.no_grad():
        training_loss = completion_loss(model(**batch), labels).item()
        for e, (nll, count) in zip(examples, rows, strict=True):
            own = model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss.item()
            assert count == sum(label != IGNORE_INDEX for label in e["labels"][1:])
            assert math.isclose(nll, own * count, rel_tol=1e-5)

    assert math.isclose(training_loss, sum(n for n, _ in rows) / sum(c for _, c in rows), rel_tol=1e-6)
