"""The harness stage's parts: benchmark lists, offline failures, and base vs fine-tuned on the authored sample task
(data/harness/), which runs without a network. The stage itself runs in tests/test_pipeline.py."""

from __future__ import annotations

from contextlib import nullcontext

import pytest

from conftest import ROOT
from medtune.bootstrap import Bootstrap
from medtune.config import HarnessConfig, compose_params, conf_section, load_params
from medtune.errors import ConfigError
from medtune.harness import (
    BenchmarkUnavailable,
    benchmark_names,
    check_benchmarks,
    compare_models,
    run_harness,
    task_manager,
)
from medtune.report import MetricChange, benchmark_tables, headline_metrics, mark_changes


def a_harness(**values: object) -> HarnessConfig:
    """The harness section of conf/config.yaml."""
    return conf_section(HarnessConfig, ROOT / "conf/config.yaml", "harness", **values)


@pytest.fixture(scope="module")
def manager():
    return task_manager(str(ROOT / "data/harness"))


def test_benchmarks_are_a_ready_list_or_task_names():
    assert "pubmedqa" in benchmark_names(a_harness()) and "mmlu_anatomy" in benchmark_names(a_harness())
    assert benchmark_names(a_harness(benchmarks="general"))[0] == "arc_easy"
    assert benchmark_names(a_harness(benchmarks=["medqa_4options"])) == ["medqa_4options"]


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("harness.tasks=[ner]", "'ner' is not a generative task of this run"),
        ("harness.benchmarks=surgery", "'surgery' is not a list of harness.lists"),
        ("harness.limit=0", "harness.limit"),
    ],
)
def test_the_config_refuses_what_the_stage_cannot_run(conf_project, override, problem):
    with pytest.raises(ConfigError, match=problem):
        load_params(compose_params(conf_project, [override]))


def test_an_unknown_benchmark_is_a_config_error(manager):
    with pytest.raises(ConfigError, match="'medqa_9options' is not a task of lm-eval"):
        check_benchmarks(["medqa_9options"], manager)


def test_a_benchmark_on_the_hub_fails_offline_naming_itself(manager, monkeypatch):
    """As on a machine without internet: the stage keeps the hub off (it would turn it on around the load)."""
    monkeypatch.setattr("medtune.harness.online", nullcontext)

    with pytest.raises(BenchmarkUnavailable, match="benchmark pubmedqa: .* It needs the hub once"):
        check_benchmarks(["medtune_sample_mc", "pubmedqa"], manager)


def test_base_and_fine_tuned_on_the_sample_task(tiny_model_dir, manager):
    """The same tiny model twice: the harness scores both alike, so the difference is 0 and so is its interval."""
    harness = a_harness(benchmarks="sample", limit=12, batch_size=4)
    check_benchmarks(["medtune_sample_mc"], manager)
    run = run_harness(tiny_model_dir, ["medtune_sample_mc"], manager, harness, seed=0)

    scores = run["medtune_sample_mc"]
    assert scores["examples"] == 12 and len(scores["questions"]["acc"]) == 12
    assert 0 <= scores["metrics"]["acc"] <= 1 and scores["metrics"]["acc_stderr"] > 0
    assert scores["metrics"]["acc"] == sum(scores["questions"]["acc"]) / 12

    result = compare_models({"base": run, "finetuned": run}, Bootstrap(200, 0.95, 0), {"limit": 12})
    entry = result["benchmarks"]["medtune_sample_mc"]
    assert entry["difference"] == {"acc": 0.0, "acc_norm": 0.0}
    assert entry["interval"]["acc"] == {"low": 0.0, "high": 0.0}


HARNESS = {  # metrics/qa/harness.json of two revisions, as DVC's metrics API gives it
    rev: {
        "metrics/qa/harness.json": {
            "data": {
                "benchmarks": {
                    "pubmedqa": {
                        "examples": 500,
                        "base": {"acc": 0.50, "acc_stderr": 0.02},
                        "finetuned": {"acc": acc, "acc_stderr": 0.02},
                        "difference": {"acc": acc - 0.5},
                        "interval": {"acc": {"low": acc - 0.53, "high": acc - 0.47}},
                    }
                }
            }
        }
    }
    for rev, acc in (("main", 0.55), ("exp", 0.60))
}


def test_the_report_marks_benchmark_changes_by_their_standard_errors():
    old, new = (headline_metrics(HARNESS[rev]) for rev in ("main", "exp"))
    change = MetricChange(
        "qa", "harness.pubmedqa.acc", old["qa"]["harness.pubmedqa.acc"], new["qa"]["harness.pubmedqa.acc"]
    )
    stderrs = {"qa": ({"harness.pubmedqa.acc": 0.02}, {"harness.pubmedqa.acc": 0.02})}

    [within] = mark_changes([change], {}, {}, Bootstrap(), stderrs)  # +0.05 against 1.96 x 0.028 = 0.055
    [better] = mark_changes(
        [change], {}, {}, Bootstrap(), {"qa": ({"harness.pubmedqa.acc": 0.01}, {"harness.pubmedqa.acc": 0.01})}
    )
    [unmarked] = mark_changes([change], {}, {}, Bootstrap(), {})

    assert within.verdict == "within noise" and within.paired[0] < 0 < within.paired[1]
    assert better.verdict == "better"
    assert unmarked.unmarked == "no standard error"


def test_the_report_shows_each_benchmark_base_against_fine_tuned():
    table = benchmark_tables(HARNESS["exp"], "exp")

    assert "## Benchmarks (lm-evaluation-harness)" in table
    assert "| pubmedqa | acc | 500 | 0.500 ± 0.020 | 0.600 ± 0.020 | +0.100 | [+0.070, +0.130] |" in table
