"""The review report: metric direction, significance of each change, changed params, metrics missing in one
revision, samples side by side. (tests/test_pipeline.py writes a real report from two revisions of a real
pipeline.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from medtune import report
from medtune.bootstrap import Bootstrap
from medtune.errors import ConfigError
from medtune.report import (
    ExperimentRow,
    MetricChange,
    changed_params,
    compare,
    headline_intervals,
    headline_metrics,
    mark_changes,
    paired_samples,
    rank,
    render,
    render_figures,
    varying_params,
)


def dvc_metrics(task: str, finetuned: dict, eval_loss: float) -> dict:
    """What `Repo.metrics.show()` gives for one task's files."""
    return {
        f"metrics/{task}/eval.json": {"data": {"base": {"f1": 0.1}, "finetuned": finetuned}},
        f"metrics/{task}/train.json": {"data": {"eval_loss": eval_loss, "runtime_s": 12.0}},
        f"metrics/{task}/merge.json": {"data": {"max_abs_logit_diff": 1e-6}},
    }


def test_headline_metrics_are_the_fine_tuned_scores_with_a_direction():
    files = dvc_metrics(
        "ner", {"f1": 0.7, "sentences": 37, "per_type": {"Disease": {"f1": 0.5, "recall": 0.4, "support": 10}}}, 0.4
    )

    assert headline_metrics(files) == {"ner": {"f1": 0.7, "per_type.Disease.f1": 0.5, "eval_loss": 0.4}}


def test_a_preference_tuned_task_reports_its_aligned_model_as_a_task_of_its_own():
    files = {
        "metrics/simplification/aligned/eval.json": {
            "data": {"finetuned": {"sari": 40.0}, "aligned": {"sari": 45.0, "quantities_invented": 0.1}}
        }
    }
    assert headline_metrics(files) == {"simplification/aligned": {"sari": 45.0, "quantities_invented": 0.1}}
    rows = [[{"id": f"s-{i}", "aligned": {"quantities_invented": [i % 2, 1]}} for i in range(30)] for _ in "ab"]
    for row in rows[1]:
        row["aligned"]["quantities_invented"] = [0, 1]  # the new revision invents no quantity
    change = MetricChange("simplification/aligned", "quantities_invented", 0.5, 0.0)
    [marked] = mark_changes([change], {"simplification/aligned": tuple(rows)}, {}, Bootstrap(200, 0.95, 0))
    assert marked.paired[1] < 0 and marked.verdict == "better"


def test_the_mark_knows_which_way_each_metric_is_better():
    assert MetricChange("qa", "perplexity", 14.0, 9.0).verdict == "better"
    assert MetricChange("qa", "perplexity", 9.0, 14.0).verdict == "worse"
    assert MetricChange("ner", "per_type.Disease.f1", 0.5, 0.6).verdict == "better"
    assert MetricChange("simplification", "fkgl_output", 4.0, 6.0).verdict == "worse"
    assert MetricChange("ner", "f1", 0.7, 0.7).verdict == "same"


def examples_jsonl(scores: list[float], key: str = "rouge_l") -> list[dict]:
    """examples.jsonl rows of one revision: the fine-tuned model's per-example statistics."""
    return [{"id": f"qa-{i}", "finetuned": {key: score}} for i, score in enumerate(scores)]


SCORES = [0.2 + 0.6 * ((i * 37) % 100) / 100 for i in range(50)]  # spread 0.2-0.8 over 50 test examples


def test_a_tiny_change_is_within_noise_and_a_consistent_one_is_marked():
    tiny = [s + (0.001 if i % 2 else -0.0009) for i, s in enumerate(SCORES)]  # +0.00005 on average
    consistent = [s + 0.02 for s in SCORES]
    changes = compare({"qa": {"rouge_l": 0.5}}, {"qa": {"rouge_l": 0.50005}})
    examples = {"qa": (examples_jsonl(SCORES), examples_jsonl(tiny))}

    [noise] = mark_changes(changes, examples, {}, Bootstrap(seed=0))
    [marked] = mark_changes(changes, {"qa": (examples_jsonl(SCORES), examples_jsonl(consistent))}, {}, Bootstrap())

    assert noise.verdict == "within noise" and noise.paired[0] < 0 < noise.paired[1]
    assert marked.verdict == "better" and marked.paired[0] > 0
    text = render("main", "exp", [], [noise], [], {}, Path("."))
    assert "| rouge_l | 0.5 | 0.5 | +5e-05 | +0.0% | [" in text and "| within noise |" in text


def test_no_mark_without_a_paired_test():
    changes = compare({"qa": {"rouge_l": 0.5, "eval_loss": 2.0}}, {"qa": {"rouge_l": 0.6, "eval_loss": 1.5}})
    other_examples = {"qa": (examples_jsonl(SCORES), examples_jsonl(SCORES[:40]))}

    rows = {c.metric: c for c in mark_changes(changes, other_examples, {}, Bootstrap())}

    assert (rows["rouge_l"].verdict, rows["rouge_l"].unmarked) == ("unmarked", "different test examples")
    assert (rows["eval_loss"].verdict, rows["eval_loss"].unmarked) == ("unmarked", "no per-example scores")
    text = render("main", "exp", [], list(rows.values()), [], {}, Path("."))
    assert "| not marked: different test examples |" in text


def test_the_forgetting_checks_items_are_paired_apart_from_the_test_examples():
    """examples.jsonl holds the test examples, then the general items with their `general.*` statistics."""
    test_rows = examples_jsonl(SCORES)
    general = [{"id": f"general-{i}", "finetuned": {"general.exact_match": [float(i % 2), 1.0]}} for i in range(40)]
    forgot = [{"id": r["id"], "finetuned": {"general.exact_match": [0.0, 1.0]}} for r in general]
    changes = compare(
        {"qa": {"rouge_l": 0.5, "general.exact_match": 0.5}}, {"qa": {"rouge_l": 0.52, "general.exact_match": 0.0}}
    )

    rows = mark_changes(
        changes, {"qa": (test_rows + general, examples_jsonl([s + 0.02 for s in SCORES]) + forgot)}, {}, Bootstrap()
    )

    assert {c.metric: c.verdict for c in rows} == {"general.exact_match": "worse", "rouge_l": "better"}
    assert rows[0].paired[1] < 0  # 20 of 40 answers lost: the interval of the change is below 0


def test_timings_are_never_marked_and_say_whether_the_hardware_matched():
    amd = {"cpu": "AMD EPYC", "cpu_flags": ["avx512_bf16"], "cores": 2, "gpu": None, "torch": "2.13.0"}
    intel = {**amd, "cpu": "Intel Xeon", "cpu_flags": ["avx512_bf16", "amx_bf16"]}
    changes = compare({"qa": {"ms_per_token": 10.0}}, {"qa": {"ms_per_token": 14.6}})

    [across] = mark_changes(changes, {}, {"qa": (intel, amd)}, Bootstrap())
    [same] = mark_changes(changes, {}, {"qa": (amd, {**amd, "torch": "2.14.0"})}, Bootstrap())
    [unknown] = mark_changes(changes, {}, {"qa": (None, amd)}, Bootstrap())

    assert (across.verdict, across.unmarked) == ("unmarked", "different machines")
    assert same.unmarked == "one timing per revision, not tested"  # library versions differ: same hardware
    assert unknown.unmarked == "different machines"


def test_the_experiment_table_reads_each_metrics_interval():
    files = {
        "metrics/ner/eval.json": {"data": {"finetuned": {"f1": 0.7, "interval": {"f1": {"low": 0.6, "high": 0.8}}}}}
    }
    assert headline_intervals(files) == {"ner.f1": (0.6, 0.8)}
    assert report.with_interval(0.7, (0.6, 0.8)) == "0.7 [0.6, 0.8]"


def test_change_is_absolute_and_relative_to_the_old_value():
    change = MetricChange("qa", "perplexity", 10.0, 9.0)
    assert (change.delta, change.relative) == (-1.0, -0.1)
    assert MetricChange("ner", "f1", 0.0, 0.5).relative is None  # no relative change from zero


def test_a_metric_or_task_missing_in_one_revision_is_reported_not_dropped():
    old = {"qa": {"perplexity": 9.0}, "ner": {"f1": 0.7}}
    new = {"qa": {"perplexity": 8.0, "rouge_l": 0.2}}

    rows = {(c.task, c.metric): c for c in compare(old, new)}

    assert rows["qa", "rouge_l"].verdict == "new" and rows["qa", "rouge_l"].delta is None
    assert rows["ner", "f1"].verdict == "gone"
    assert rows["qa", "perplexity"].verdict == "better"


def test_changed_params_come_from_dvc_params_diff():
    diff = {"params.yaml": {"peft.r": {"old": 8, "new": 16}, "train.lr": {"old": 0.0003, "new": 0.0001}}}
    assert changed_params(diff) == [("peft.r", 8, 16), ("train.lr", 0.0003, 0.0001)]
    assert changed_params({}) == []


def test_a_task_left_out_of_an_experiment_is_one_row():
    diff = {
        "params.yaml": {"tasks.qa.max_length": {"old": 512, "new": None}, "tasks.qa.kind": {"old": "sft", "new": None}}
    }
    assert changed_params(diff) == [("tasks.qa", "(run)", "(not run)")]


def test_samples_are_paired_by_id_and_only_for_text_outputs():
    old = [{"id": "a", "source": "s", "reference": "r", "finetuned": "old a"}, {"id": "b", "finetuned": "old b"}]
    new = [
        {"id": "c", "source": "s", "reference": "r", "finetuned": "new c"},
        {"id": "a", "source": "s", "reference": "r", "finetuned": "new a"},
    ]
    assert paired_samples(old, new) == [{"source": "s", "reference": "r", "old": "old a", "new": "new a"}]
    tags = [{"id": "a", "tokens": ["x"], "reference": ["O"], "finetuned": ["O"]}]
    assert paired_samples(tags, tags) == []


def test_markdown_report(tmp_path):
    changes = compare({"qa": {"perplexity": 10.0}}, {"qa": {"perplexity": 9.0}})
    figure = tmp_path / "report" / "qa_scores.png"
    samples = {"qa": [{"source": "What is | this?", "reference": "A\nB", "old": "x", "new": "y"}]}

    text = render("main", "workspace", [("peft.r", 8, 16)], changes, [figure], samples, tmp_path)

    assert "| `peft.r` | 8 | 16 |" in text
    assert "| perplexity | 10 | 9 | -1 | -10.0% |  | ✅ better |" in text
    assert "![qa_scores](report/qa_scores.png)" in text
    assert "| What is \\| this? | A<br>B | x | y |" in text  # cells cannot break the table


def test_experiments_rank_best_first_in_the_metrics_direction():
    rows = [
        ExperimentRow("a", {"peft.r": 8, "seed": 1}, {"qa.perplexity": 9.0}),
        ExperimentRow("b", {"peft.r": 16, "seed": 1}, {"qa.perplexity": 7.5}),
        ExperimentRow("c", {"peft.r": 32, "seed": 1}, {}),
    ]
    assert [r.name for r in rank(rows, "qa.perplexity")] == ["b", "a", "c"]
    assert varying_params(rows) == ["peft.r"]


def test_settings_of_a_task_that_some_experiments_left_out_are_one_column():
    rows = [
        ExperimentRow("main", {"tasks": "qa,ner", "tasks.qa.max_length": 512, "tasks.ner.train.lr": 1e-3}, {}),
        ExperimentRow("exp", {"tasks": "ner", "tasks.ner.train.lr": 5e-4}, {}),
    ]
    assert varying_params(rows) == ["tasks", "tasks.ner.train.lr"]


def test_ranking_by_a_count_is_refused():
    with pytest.raises(ValueError, match="no direction"):
        rank([], "qa.examples")


def test_a_task_run_in_one_revision_only_is_one_line():
    text = render("main", "exp", [], compare({"qa": {"perplexity": 9.0}}, {}), [], {}, Path("."))
    assert "### qa\n\nNot run in `exp`." in text


def test_a_report_without_param_changes_says_so():
    text = render(
        "main", "workspace", [], compare({"qa": {"perplexity": 9.0}}, {"qa": {"perplexity": 9.0}}), [], {}, Path(".")
    )
    assert "## Params that changed\n\nNone." in text
    assert "| perplexity | 9 | 9 | +0 | +0.0% |  | = same |" in text


def test_a_failing_dvc_plots_diff_is_a_config_error_with_dvcs_message(tmp_path, monkeypatch):
    def dvc_without_the_revision(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: unknown Git revision 'mian'\n")

    monkeypatch.setattr(report.subprocess, "run", dvc_without_the_revision)

    with pytest.raises(ConfigError, match=r"--against.*dvc plots diff mian --json.*unknown Git revision 'mian'"):
        render_figures("mian", None, tmp_path / "report")
