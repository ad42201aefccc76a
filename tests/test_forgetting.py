"""The forgetting check: the authored general set, its answer matching, and its place in a generative evaluation."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, a_task, write_lines
from medtune.config import EvalConfig, conf_section
from medtune.errors import DataError
from medtune.evaluation import GeneralSet, evaluate_generation
from medtune.forgetting import contains_answer, general_examples, read_general_set
from medtune.modeling import load_tokenizer
from medtune.tasks import tokenize_sft

GENERAL = ROOT / "data" / "raw" / "general.jsonl"


def test_an_answer_counts_only_as_whole_words_in_a_row():
    assert contains_answer("Seven times eight is 56.", "56")
    assert not contains_answer("It is 560.", "56")
    assert contains_answer("Apple,\nMango,\npear", "apple, mango, pear")  # case, lines and punctuation aside
    assert not contains_answer("mango, apple, pear", "apple, mango, pear")
    assert contains_answer("The letter after G is H.", "H") and not contains_answer("Hello there", "H")


def test_the_authored_general_set_is_valid_and_each_answer_is_in_its_reference():
    items = read_general_set(GENERAL, None)

    assert len(items) == 50 and len({item["id"] for item in items}) == 50
    assert all(contains_answer(item["reference"], item["answer"]) for item in items if "answer" in item)
    assert sum("answer" in item for item in items) >= 40  # most items are checked by their short answer
    assert read_general_set(GENERAL, 6) == items[:6]


@pytest.mark.parametrize(
    ("second_line", "problem"),
    [
        ({"id": "g-2", "instruction": "What is 2 plus 2?"}, 'general.jsonl:2: column "reference" .*not found'),
        ({"instruction": "What is 2 plus 2?", "reference": "4"}, 'general.jsonl:2: id field "id" is missing'),
        ({"id": "g-2", "instruction": "Name a colour.", "reference": "Red.", "answer": ""}, 'field "answer"'),
        (
            {"id": "g-1", "instruction": "What is 2 plus 2?", "reference": "4"},
            "general.jsonl:2: duplicate id 'g-1'",
        ),
    ],
)
def test_a_bad_general_item_names_its_line(tmp_path, second_line, problem):
    first = {"id": "g-1", "instruction": "What is 1 plus 1?", "reference": "1 plus 1 is 2.", "answer": "2"}
    path = write_lines(tmp_path / "general.jsonl", [json.dumps(first), json.dumps(second_line)])

    with pytest.raises(DataError, match=problem):
        read_general_set(path, None)


def test_a_generative_evaluation_scores_both_models_on_the_general_items(tiny_model_dir):
    """Base and fine-tuned are the same tiny model here, so their general figures agree exactly."""
    tokenizer = load_tokenizer(tiny_model_dir)
    task = a_task(
        system="Answer briefly.", prompt_template="{prompt}", metrics=["rouge_l"], generation={"max_new_tokens": 4}
    )
    records = [{"id": f"qa-{i}", "prompt": f"Question {i}?", "response": "An answer."} for i in range(3)]
    examples = [tokenize_sft(tokenizer, r, task.system, task.prompt_template, 64)[0] for r in records]
    items = read_general_set(GENERAL, 5)
    general = GeneralSet(items, general_examples(tokenizer, items, 64, GENERAL))
    eval_cfg = conf_section(EvalConfig, ROOT / "conf/config.yaml", "eval", batch_size=2, bootstrap_samples=50)
    models = {"base": tiny_model_dir, "finetuned": tiny_model_dir}

    done = evaluate_generation(task, records, examples, tokenizer, models, eval_cfg, 0, None, general)

    scores = done.results["finetuned"]["general"]
    assert scores.keys() == {"perplexity", "rouge_l", "exact_match"} and scores == done.results["base"]["general"]
    assert scores["perplexity"] > 1 and 0 <= scores["exact_match"] <= 1
    interval = done.results["finetuned"]["interval"]["general.perplexity"]
    assert interval["low"] <= scores["perplexity"] <= interval["high"]
    assert [row["id"] for row in done.examples] == ["qa-0", "qa-1", "qa-2", *(item["id"] for item in items)]
    assert done.examples[0]["finetuned"].keys() == {"perplexity", "rouge_l"}
    assert done.examples[-1]["finetuned"].keys() == {"general.perplexity", "general.rouge_l", "general.exact_match"}
    assert [s["instruction"] for s in done.general_samples] == [item["instruction"] for item in items]


def test_an_evaluation_names_its_models_and_reports_the_second_ones_change_with_a_paired_interval(tiny_model_dir):
    """evaluate_aligned's call: the SFT model first, the aligned one second (the same tiny model here: no change)."""
    tokenizer = load_tokenizer(tiny_model_dir)
    task = a_task(prompt_template="{prompt}", metrics=["rouge_l"], generation={"max_new_tokens": 4})
    records = [{"id": f"s-{i}", "prompt": f"Take {i} mg.", "response": f"Take {i} milligrams."} for i in range(4)]
    examples = [tokenize_sft(tokenizer, r, task.system, task.prompt_template, 64)[0] for r in records]
    eval_cfg = conf_section(EvalConfig, ROOT / "conf/config.yaml", "eval", batch_size=2, bootstrap_samples=50)
    models = {"finetuned": tiny_model_dir, "aligned": tiny_model_dir}

    done = evaluate_generation(task, records, examples, tokenizer, models, eval_cfg, 0, None)

    difference = done.results["difference"]
    assert difference.pop("of") == "aligned - finetuned" and difference.keys() == {"perplexity", "rouge_l"}
    assert all(change == {"delta": 0.0, "low": 0.0, "high": 0.0} for change in difference.values())
    assert {"finetuned", "aligned"} <= done.samples[0].keys() and "base" not in done.samples[0]
