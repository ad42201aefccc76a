"""The real pipeline: `dvc repro` and `dvc exp run` on the tiny model in a temporary git repo (tests/dvc_project.py).

The scenario runs in order (each step starts from the state the previous one left):
full build -> predict, chat and the CLI offline -> no-op rerun -> push, clone and pull through a DVC remote -> opt-in
GGUF export -> opt-in harness benchmarks -> opt-in preference tuning (sampled, then given pairs) -> what an eval-only
change, one task's change and an edit of a task's data file make stale (`dvc status`: DVC reruns exactly those and
what their new outputs feed) -> LoRA-rank experiment -> full fine-tuning -> model switch -> a queued sweep over one
task -> the review report of one of its experiments against the baseline.
Rebuilds (byte-identical, killed at every write) run on a build of their own: tests/test_pipeline_rebuild.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dvc_project import (
    NETWORK_LOG,
    PER_TASK,
    TASKS,
    command_env,
    commit_workspace,
    dvc,
    make_repo,
    run,
    set_root_config,
    set_task_config,
    stages_run,
)
from medtune.data import split_words
from medtune.generation import entities_from_tags
from medtune.modeling import MAX_RELATIVE_LOGIT_DIFF

pytestmark = pytest.mark.pipeline


# qa's data lives outside data/raw/, where a user may keep a corpus (data.path): DVC tracks each task's own file
QA_DATA = "corpora/qa.jsonl"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("medtune-repo"))
    (repo / QA_DATA).parent.mkdir()
    (repo / "data/raw/qa.jsonl").rename(repo / QA_DATA)
    set_task_config(repo, "qa", {"data": {"path": QA_DATA}})
    commit_workspace(repo, "qa's data in corpora/")
    return repo


def test_repro_builds_every_stage_of_every_task_and_writes_the_metrics(repo):
    ran = stages_run(dvc(repo, "repro"))
    assert ran == {"base", "scope"} | {f"{stage}@{task}" for stage in PER_TASK for task in TASKS}
    assert json.loads((repo / "metrics/scope/eval.json").read_text())["accuracy"] > 0.5
    metrics = {task: json.loads((repo / f"metrics/{task}/eval.json").read_text()) for task in TASKS}
    for model in ("base", "finetuned"):
        qa, terminology = metrics["qa"][model], metrics["terminology"][model]
        assert qa["perplexity"] > 1 and qa["examples"] == 4 and isinstance(qa["rouge_l"], float)
        assert {"sari", "bleu", "fkgl_output", "fkgl_source"} <= metrics["simplification"][model].keys()
        # a share of the test examples: a whole number of them follow the format
        assert terminology["format_adherence"] * terminology["examples"] in range(terminology["examples"] + 1)
        assert {"precision", "recall", "f1", "per_type"} <= metrics["ner"][model].keys()
    assert metrics["qa"]["finetuned"]["perplexity"] < metrics["qa"]["base"]["perplexity"]  # it learnt something
    assert metrics["ner"]["base"]["per_type"]["Medication"]["support"] > 0
    for task, metric in (("ner", "f1"), ("ner", "per_type.Medication.f1"), ("qa", "perplexity"), ("qa", "rouge_l")):
        value, interval = metrics[task]["finetuned"], metrics[task]["finetuned"]["interval"][metric]
        for name in metric.split("."):
            value = value[name]
        assert interval["low"] <= value <= interval["high"], (task, metric)
    examples = [json.loads(line) for line in (repo / "metrics/qa/examples.jsonl").read_text().splitlines()]
    assert len(examples) == 4 + 6 and {"perplexity", "rouge_l"} <= examples[0]["finetuned"].keys()
    assert examples[-1]["id"] == "general-006" and "general.exact_match" in examples[-1]["base"]
    # the forgetting check: every generative task, base and fine-tuned, on the first 6 general items
    for task in ("qa", "simplification", "terminology"):
        for model in ("base", "finetuned"):
            general = metrics[task][model]["general"]
            assert general.keys() == {"perplexity", "rouge_l", "exact_match"} and general["perplexity"] > 1
            assert "general.perplexity" in metrics[task][model]["interval"]
        answers = (repo / f"metrics/{task}/general_samples.jsonl").read_text().splitlines()
        assert [json.loads(a)["id"] for a in answers] == [f"general-{i:03d}" for i in range(1, 7)]
    assert "general" not in metrics["ner"]["finetuned"]
    machine = json.loads((repo / "metrics/qa/eval_machine.json").read_text())
    assert machine["cpu"] and machine["torch"]  # timings name their hardware
    assert (repo / "metrics/ner/confusion.csv").read_text().startswith("actual,predicted\n")
    assert json.loads((repo / "metrics/qa/merge.json").read_text())["relative_logit_diff"] <= 1e-5
    train = json.loads((repo / "metrics/qa/train.json").read_text())
    assert train["steps"] > 0 and 0 < train["trainable_share"] < 1
    assert (repo / "models/adapters/qa/adapter_model.safetensors").is_file()
    assert (repo / "metrics/qa/live/plots/metrics/loss.tsv").is_file()
    assert len((repo / "metrics/qa/samples.jsonl").read_text().splitlines()) == 4
    assert "models/merged/qa" in (repo / "dvc.lock").read_text()
    card = (repo / "models/merged/ner/README.md").read_text()
    assert "provenance: authored sample data" in card and "`B-Medication`" in card and "Medical disclaimer" in card


def test_predict_tags_text_as_evaluate_tagged_it(repo):
    """`medtune predict` loads the merged model its own way (bidirectional, from its config): the test sentence the
    fine-tuned model tagged most in evaluate gets the same entities back."""
    samples = [json.loads(line) for line in (repo / "metrics/ner/samples.jsonl").read_text().splitlines()]
    sample = max(samples, key=lambda s: sum(tag != "O" for tag in s["finetuned"]))
    text = " ".join(sample["tokens"])
    result = subprocess.run(["medtune", "predict", "ner", text], cwd=repo, capture_output=True, text=True,
                            env=command_env(), check=True)  # fmt: skip
    assert not NETWORK_LOG.exists()
    entities = json.loads(result.stdout)
    assert entities == entities_from_tags(text, split_words(text), sample["finetuned"])
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)


def test_the_cli_runs_offline(repo):
    """The commands a user runs around the pipeline, under the same network guard as everything in this file."""
    medtune = str(Path(sys.executable).parent / "medtune")
    chat = subprocess.run([medtune, "chat", "qa"], cwd=repo, input="How is anaemia treated?\n/exit\n",
                          capture_output=True, text=True, env=command_env())  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert "not medical advice" in " ".join(chat.stdout.split())  # the safety note after the (tiny model's) answer
    assert "GiB" in run(repo, medtune, "plan", "model=mistral-7b-instruct-v0.3", "peft=qlora")
    assert not NETWORK_LOG.exists(), NETWORK_LOG.read_text()


def test_the_network_guard_of_these_commands_blocks_and_records(tmp_path):
    """What the guard does to a process that tries: it fails, and the attempt is on record even if caught."""
    log = tmp_path / "attempts.log"
    code = "import urllib.request as r\ntry:\n    r.urlopen('https://huggingface.co')\nexcept OSError:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], env={**command_env(), "MEDTUNE_NETWORK_LOG": str(log)}, check=True)
    assert "getaddrinfo('huggingface.co')" in log.read_text()


def test_a_second_repro_runs_nothing(repo):
    assert stages_run(dvc(repo, "repro")) == set()
    assert "up to date" in dvc(repo, "status")


def test_a_fresh_clone_pulls_every_output_from_a_remote_and_has_nothing_to_rerun(repo, tmp_path):
    remote, clone = tmp_path / "dvc-remote", tmp_path / "clone"
    dvc(repo, "remote", "add", "--default", "shared", str(remote))
    dvc(repo, "push")
    commit_workspace(repo, "results of the tiny pipeline, pushed to the shared remote")

    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    dvc(clone, "pull")
    assert (clone / "models/merged/ner/model.safetensors").is_file()
    assert stages_run(dvc(clone, "repro")) == set()
    assert "up to date" in dvc(clone, "status")


def test_export_is_opt_in_and_writes_checked_gguf_files_a_modelfile_and_the_full_card(repo):
    set_root_config(repo, export={"tasks": ["terminology"]})
    assert stages_run(dvc(repo, "repro")) == {"export@terminology"}
    out = repo / "models/export/terminology"
    files = sorted(p.name for p in out.iterdir())
    assert files == ["Modelfile", "README.md", "terminology-f16.gguf", "terminology-q8_0.gguf"]
    checks = json.loads((repo / "metrics/terminology/export.json").read_text())
    assert checks["f16"]["top1_agreement"] == 1.0
    assert checks["q8_0"]["relative_logit_diff"] <= MAX_RELATIVE_LOGIT_DIFF["q8_0"]  # what the stage enforces
    card = (out / "README.md").read_text()
    assert "| format_adherence |" in card and "terminology-q8_0.gguf" in card  # test metrics and the files
    set_root_config(repo, export={"tasks": []})
    assert stages_run(dvc(repo, "repro")) == set()


def test_the_harness_is_opt_in_and_benchmarks_base_against_fine_tuned(repo):
    set_root_config(repo, harness={"tasks": ["qa"], "benchmarks": "sample", "limit": 8})
    assert stages_run(dvc(repo, "repro")) == {"harness@qa"}  # offline: the sample task reads local files
    entry = json.loads((repo / "metrics/qa/harness.json").read_text())["benchmarks"]["medtune_sample_mc"]
    assert entry["examples"] == 8 and {"acc", "acc_stderr", "acc_norm"} <= entry["finetuned"].keys()
    assert entry["difference"]["acc"] == pytest.approx(entry["finetuned"]["acc"] - entry["base"]["acc"])
    assert entry["interval"]["acc"]["low"] <= entry["difference"]["acc"] <= entry["interval"]["acc"]["high"]
    run(repo, str(Path(sys.executable).parent / "medtune"), "report", "--against", "HEAD")
    assert "| medtune_sample_mc | acc | 8 | " in (repo / "metrics/report.md").read_text()
    set_root_config(repo, harness={"tasks": []})
    assert stages_run(dvc(repo, "repro")) == set()


ALIGN_STAGES = {"pairs@simplification", "align@simplification", "evaluate_aligned@simplification"}


def test_preference_tuning_is_opt_in_and_aligns_on_pairs_from_the_sft_models_answers(repo):
    set_root_config(repo, align={"tasks": ["simplification"], "pairs": {"samples": 2}, "train": {"max_steps": 2}})
    assert stages_run(dvc(repo, "repro")) == ALIGN_STAGES
    out = repo / "data/pairs/simplification"
    stats = json.loads((out / "stats.json").read_text())
    pairs = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert stats["source"] == "sampled" and stats["train"]["pairs"] == len(pairs) > 0
    assert stats["train"]["pairs"] + stats["train"]["ties_skipped"] == stats["train"]["prompts"]
    assert all(p["score"]["chosen"] - p["score"]["rejected"] > 0.05 and p["chosen"] != p["rejected"] for p in pairs)
    aligned = json.loads((repo / "metrics/simplification/align.json").read_text())
    assert aligned["steps"] == 2 and aligned["pairs"] == len(pairs)
    assert aligned["merge"]["relative_logit_diff"] <= MAX_RELATIVE_LOGIT_DIFF["merge"]
    assert "Preference tuning" in (repo / "models/aligned/simplification/README.md").read_text()
    assert (repo / "metrics/simplification/align/live/plots/metrics/rewards/margins.tsv").is_file()
    evaluation = json.loads((repo / "metrics/simplification/aligned/eval.json").read_text())
    assert evaluation["difference"]["of"] == "aligned - finetuned"
    sft = json.loads((repo / "metrics/simplification/eval.json").read_text())["finetuned"]
    assert evaluation["finetuned"]["sari"] == sft["sari"]  # the same SFT model, scored the same way
    first = (out / "train.jsonl").read_bytes()
    assert stages_run(dvc(repo, "repro", "-f", "-s", "pairs@simplification")) == {"pairs@simplification"}
    assert (out / "train.jsonl").read_bytes() == first  # seeded sampling: the same pairs, nothing downstream reruns


def test_given_preference_pairs_replace_the_sampled_ones_and_the_aligned_model_exports(repo):
    given = repo / "data/preference/simplification"
    given.mkdir()
    rows = [
        {"prompt": f"Take {n} mg of ibuprofen every {h} hours.", "chosen": f"Take {n} mg every {h} hours.",
         "rejected": f"Take {n + 100} mg every {h} hours."}
        for n, h in ((200, 4), (400, 6), (600, 8), (800, 12), (100, 24), (250, 4), (500, 6), (50, 8), (75, 12), (5, 24))
    ]  # fmt: skip
    (given / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    set_root_config(repo, align={"given": ["simplification"]})
    assert stages_run(dvc(repo, "repro")) == ALIGN_STAGES
    stats = json.loads((repo / "data/pairs/simplification/stats.json").read_text())
    assert stats["source"] == "given" and stats["train"]["pairs"] + stats["validation"]["pairs"] == len(rows)
    set_root_config(repo, export={"tasks": ["simplification"], "model": "aligned", "types": ["f16"], "ollama": "f16"})
    assert stages_run(dvc(repo, "repro")) == {"export@simplification"}  # the aligned model, exported
    assert "given in `data/preference/`" in (repo / "models/export/simplification/README.md").read_text()
    set_root_config(repo, align={"tasks": [], "given": []}, export={"tasks": [], "model": "merged"})
    assert stages_run(dvc(repo, "repro")) == set()


def changed_stages(repo: Path) -> set[str]:
    """The stages `dvc status` says are out of date: what `dvc repro` would start from."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, env=command_env()
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@contextlib.contextmanager
def config_as_it_was(repo: Path) -> Iterator[None]:
    """conf/ and params.yaml back as they were after the edits inside: the outputs are up to date again."""
    saved = {path: path.read_bytes() for path in [*(repo / "conf").rglob("*.yaml"), repo / "params.yaml"]}
    yield
    for path, content in saved.items():
        path.write_bytes(content)
    assert changed_stages(repo) == set()


def test_an_evaluation_param_makes_only_evaluate_stale(repo):
    with config_as_it_was(repo):
        set_root_config(repo, eval={"batch_size": 2})
        assert changed_stages(repo) == {f"evaluate@{task}" for task in TASKS}


def test_a_change_to_one_tasks_config_makes_only_that_tasks_stages_stale(repo):
    with config_as_it_was(repo):
        set_task_config(repo, "terminology", {"generation": {"max_new_tokens": 6}})
        assert changed_stages(repo) == {"evaluate@terminology"}
    with config_as_it_was(repo):
        set_task_config(repo, "simplification", {"system": "Use plain words."})
        stale = changed_stages(repo)  # tokenize renders the prompt; merge and evaluate record it (card, prompts)
        assert stale == {"tokenize@simplification", "merge@simplification", "evaluate@simplification"}


def test_each_task_tracks_its_own_data_file_wherever_it_is_in_the_project(repo):
    """An edit of qa's file outside data/raw/ (data.path) makes that task's prepare stale and no other; an edit of
    ner's file adds ner's (before, DVC tracked data/raw/ as a whole: the first edit went unseen, and any data/raw
    edit reran every task)."""
    qa, ner = repo / QA_DATA, repo / "data" / "raw" / "ner.jsonl"
    qa_lines, ner_lines = qa.read_text(), ner.read_text()
    qa.write_text("".join(qa_lines.splitlines(keepends=True)[:-20]))
    assert changed_stages(repo) == {"prepare@qa"}
    ner.write_text("".join(ner_lines.splitlines(keepends=True)[:-5]))
    assert changed_stages(repo) == {"prepare@qa", "prepare@ner"}
    qa.write_text(qa_lines)
    ner.write_text(ner_lines)
    assert changed_stages(repo) == set()


# The experiments below run a task or one of each kind of model head (-S 'tasks=[...]'): the others take the same path
ONE_TASK_PER_HEAD = ("qa", "ner")


def test_an_experiment_on_lora_rank_reruns_train_merge_and_evaluate(repo):
    ran = stages_run(dvc(repo, "exp", "run", "-S", "peft.r=16", "-S", "tasks=[qa]"))
    assert ran == {"train@qa", "merge@qa", "evaluate@qa"}
    assert yaml.safe_load((repo / "params.yaml").read_text())["peft"]["r"] == 16  # dvc composed it from conf/


def test_full_fine_tuning_trains_merges_and_predicts_with_both_heads(repo):
    overrides = ["-S", "peft=full", "-S", "tasks.ner.attention=bidirectional"]
    ran = stages_run(dvc(repo, "exp", "run", *overrides, "-S", f"tasks=[{','.join(ONE_TASK_PER_HEAD)}]"))
    assert ran == {f"{stage}@{task}" for stage in ("train", "merge", "evaluate") for task in ONE_TASK_PER_HEAD}
    for task in ONE_TASK_PER_HEAD:
        assert json.loads((repo / f"metrics/{task}/train.json").read_text())["trainable_share"] == 1
        assert (repo / f"models/adapters/{task}/model.safetensors").is_file()  # the whole model, no adapter
        saved = json.loads((repo / f"metrics/{task}/merge.json").read_text())["saved"]
        assert saved["relative_logit_diff"] <= MAX_RELATIVE_LOGIT_DIFF["merge"]
    config = json.loads((repo / "models/merged/ner/config.json").read_text())
    assert config["medtune_attention"] == "bidirectional"
    assert "Full fine-tuning (every weight trained)" in (repo / "models/merged/ner/README.md").read_text()
    predicted = subprocess.run(["medtune", "predict", "ner", "Fever after amoxicillin."], cwd=repo, capture_output=True,
                               text=True, env=command_env(), check=True)  # fmt: skip
    assert isinstance(json.loads(predicted.stdout), list)  # tags as the trained model does: tests/test_attention.py


def test_switching_the_model_reruns_everything_downstream_of_base(repo):
    (repo / "conf/model/tiny-random-b.yaml").write_text(
        "defaults: [tiny-random, _self_]\nname: tiny-random-b\nweights: {init_seed: 1}\n"
    )
    ran = stages_run(
        dvc(repo, "exp", "run", "-S", "model=tiny-random-b", "-S", f"tasks=[{','.join(ONE_TASK_PER_HEAD)}]")
    )
    assert ran == {"base"} | {f"{stage}@{task}" for stage in PER_TASK[1:] for task in ONE_TASK_PER_HEAD}
    assert (repo / "models/base/tiny-random-b/model.safetensors").is_file()


def wait_for_queue(repo: Path, timeout_s: float = 900) -> str:
    """Block until `dvc queue status` lists nothing queued or running; return the final status table."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = dvc(repo, "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(5)
    raise AssertionError(f"the queue did not finish in {timeout_s} s:\n{status}")


def test_a_queued_sweep_over_one_task_gives_one_experiment_per_value(repo, monkeypatch):
    from medtune.report import experiment_rows

    commit_workspace(repo, "baseline for the sweep")
    dvc(repo, "exp", "run", "--queue", "-S", "tasks=[ner]", "-S", "peft.r=2,4")
    dvc(repo, "queue", "start", "-j", "1")
    status = wait_for_queue(repo)
    assert status.count("Success") == 2, status

    monkeypatch.chdir(repo)
    rows = [r for r in experiment_rows() if r.params.get("peft.r") in (2, 4)]
    assert sorted(r.params["peft.r"] for r in rows) == [2, 4]
    for row in rows:
        assert "ner.f1" in row.metrics and "ner.eval_loss" in row.metrics
        assert not any(m.startswith("qa.") for m in row.metrics)  # only ner ran
    assert rows[0].metrics["ner.eval_loss"] != rows[1].metrics["ner.eval_loss"]
    low, high = rows[0].intervals["ner.f1"]
    assert low <= rows[0].metrics["ner.f1"] <= high


def test_report_compares_an_experiment_with_the_baseline(repo):
    experiment = next(line.split()[0] for line in dvc(repo, "exp", "list", "--name-only").splitlines() if line.strip())
    run(repo, str(Path(sys.executable).parent / "medtune"), "report", "--against", "HEAD", "--rev", experiment)

    report = (repo / "metrics/report.md").read_text()
    assert re.search(r"\| `peft\.r` \| 8 \| [24] \|", report)
    assert "| `tasks.qa` | (run) | (not run) |" in report
    # a paired test on the 4 test sentences both revisions tagged: the interval of the change, and its mark
    marked = r"\[[-+\d.e]+, [-+\d.e]+\] \| (✅ better|❌ worse|within noise)"
    assert re.search(rf"\| f1 \| [\d.]+ \| [\d.]+ \|[^|]*\|[^|]*\| ({marked}| \| = same) \|", report)
    assert "| eval_loss |" in report and "not marked: no per-example scores" in report
    figures = sorted((repo / "metrics/report").glob("*.png"))
    assert {"ner_confusion.png", "ner_training_loss.png", "ner_validation_loss.png"} <= {f.name for f in figures}
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in figures)
