"""The model card states what the run did: the task's own training settings, its measured numbers, the disclaimer."""

from __future__ import annotations

from conftest import ROOT
from medtune.card import DISCLAIMER, model_card
from medtune.config import load_params, train_config


def test_the_card_lists_the_training_settings_the_task_trained_with():
    params = load_params(ROOT / "params.yaml")  # ner overrides epochs and lr (conf/task/ner.yaml), qa does not
    ner = model_card("ner", params, {"eval_loss": 0.39}, evaluation=None)
    qa = model_card("qa", params, {"eval_loss": 2.1}, evaluation={"base": {"ppl": 15.0}, "finetuned": {"ppl": 9.2}})
    ner_train = train_config(params, "ner")
    assert ner_train.epochs != params.train.epochs  # else this test could not tell the two apart
    assert f"| `train.epochs` | {ner_train.epochs} |" in ner and f"| `train.lr` | {ner_train.lr} |" in ner
    assert f"| `train.epochs` | {params.train.epochs} |" in qa and f"| `train.lr` | {params.train.lr} |" in qa
    assert "| eval_loss | 0.39 |" in ner and "| ppl | 15 | 9.2 |" in qa
    assert DISCLAIMER in ner and DISCLAIMER in qa


def test_the_card_shows_each_metric_with_its_interval():
    params = load_params(ROOT / "params.yaml")
    evaluation = {
        "base": {"f1": 0.06, "interval": {"f1": {"low": 0.03, "high": 0.1}}},
        "finetuned": {"f1": 0.74, "interval": {"f1": {"low": 0.63, "high": 0.86}}},
        "bootstrap": {"samples": 1000, "confidence": 0.95, "seed": 42},
    }
    card = model_card("ner", params, {}, evaluation=evaluation)
    assert "| f1 | 0.06 [0.03, 0.1] | 0.74 [0.63, 0.86] |" in card
    assert "95% bootstrap intervals" in card and "interval.f1" not in card


def test_the_forgetting_check_is_labelled_apart_from_the_test_split():
    params = load_params(ROOT / "params.yaml")
    general = {"perplexity": 8.1, "exact_match": 0.3}
    evaluation = {"base": {"rouge_l": 0.2, "general": general}, "finetuned": {"rouge_l": 0.3, "general": general}}
    card = model_card("qa", params, {}, evaluation=evaluation)
    assert "| general.exact_match | 0.3 | 0.3 |" in card and "not the test split" in card
    assert "not the test split" not in model_card(
        "qa", params, {}, evaluation={"base": {}, "finetuned": {"rouge_l": 0.3}}
    )


def test_a_hub_datasets_card_names_it_as_logs_and_stats_do():
    params = load_params(ROOT / "params.yaml")
    params.tasks.ner.data.merge_with({"source": "hub", "hub_id": "ncbi/ncbi_disease", "revision": None})
    card = model_card("ner", params, {}, evaluation=None, data_origin={"commit": "abc123"})
    assert "- source: `ncbi/ncbi_disease@main` (Hugging Face hub), commit `abc123`" in card
