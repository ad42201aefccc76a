"""The real pipeline: `dvc repro` and `dvc exp run` on the tiny model in a temporary git repo.

The scenario runs in order (each step starts from the state the previous one left):
full build -> no-op rerun -> push, clone and pull through a DVC remote -> opt-in GGUF export -> eval-only change
-> LoRA-rank experiment -> model switch -> a queued sweep over one task -> the review report of one of its
experiments against the baseline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT
from medtune.config import compose_params

pytestmark = pytest.mark.pipeline

# Small enough for CI, still every stage and every param path of the real pipeline.
TINY = {
    "model": "tiny-random",
    "train": {"epochs": 1, "eval_steps": 4, "logging_steps": 2},
    "eval": {"batch_size": 4, "max_examples": 4},
}
TINY_GENERATIVE_TASK = {"max_length": 640, "generation": {"max_new_tokens": 8}}


def run(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def dvc(repo: Path, *args: str) -> str:
    return run(repo, sys.executable, "-m", "dvc", *args)


def set_root_config(repo: Path, **values) -> None:
    """Edit conf/config.yaml (keys after `_self_` override the groups) and recompose params.yaml, as a user would."""
    path = repo / "conf" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in values.items():
        if key == "model":
            config["defaults"][0] = {"model": value}
        else:
            config[key] = OmegaConf.to_container(OmegaConf.merge(config.get(key, {}), value))
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    compose_params(repo)


def set_task_config(repo: Path, task: str, values: dict) -> None:
    """Edit conf/task/<task>.yaml, where a task's settings live (so `-S 'tasks=[...]'` can leave the task out)."""
    path = repo / "conf" / "task" / f"{task}.yaml"
    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(OmegaConf.to_container(OmegaConf.merge(config, values)), sort_keys=False))
    compose_params(repo)


def commit_workspace(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("medtune-repo")
    for name in ("conf", "stages", "src", "dvc.yaml", ".dvcignore", ".gitignore"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, repo / name)
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "data" / "raw").mkdir(parents=True)
    for raw in (ROOT / "data" / "raw").glob("*.jsonl"):
        (repo / "data" / "raw" / raw.name).write_text("".join(raw.read_text().splitlines(keepends=True)[:40]))
    set_root_config(repo, **TINY)
    for task in ("qa", "simplification", "terminology"):
        set_task_config(repo, task, TINY_GENERATIVE_TASK)
    run(repo, "git", "init", "-q")
    commit_workspace(repo, "tiny project")
    return repo


TASKS = ("qa", "simplification", "terminology", "ner")
PER_TASK = ("prepare", "tokenize", "train", "merge", "evaluate")


def test_repro_builds_every_stage_of_every_task_and_writes_the_metrics(repo):
    ran = stages_run(dvc(repo, "repro"))
    assert ran == {"base", "scope"} | {f"{stage}@{task}" for stage in PER_TASK for task in TASKS}
    assert json.loads((repo / "metrics/scope/eval.json").read_text())["accuracy"] > 0.5
    metrics = {task: json.loads((repo / f"metrics/{task}/eval.json").read_text()) for task in TASKS}
    for model in ("base", "finetuned"):
        assert metrics["qa"][model]["perplexity"] > 1 and metrics["qa"][model]["examples"] == 4
        assert 0 <= metrics["qa"][model]["rouge_l"] <= 1
        assert {"sari", "bleu", "fkgl_output", "fkgl_source"} <= metrics["simplification"][model].keys()
        assert 0 <= metrics["terminology"][model]["format_adherence"] <= 1
        assert {"precision", "recall", "f1", "per_type"} <= metrics["ner"][model].keys()
    assert metrics["ner"]["base"]["per_type"]["Medication"]["support"] > 0
    assert (repo / "metrics/ner/confusion.csv").read_text().startswith("actual,predicted\n")
    assert json.loads((repo / "metrics/qa/merge.json").read_text())["relative_logit_diff"] <= 1e-5
    train = json.loads((repo / "metrics/qa/train.json").read_text())
    assert train["steps"] > 0 and 0 < train["trainable_share"] < 1
    assert (repo / "models/adapters/qa/adapter_model.safetensors").is_file()
    assert (repo / "metrics/qa/live/plots/metrics/train/loss.tsv").is_file()
    assert len((repo / "metrics/qa/samples.jsonl").read_text().splitlines()) == 4
    assert "models/merged/qa" in (repo / "dvc.lock").read_text()
    card = (repo / "models/merged/ner/README.md").read_text()
    assert "provenance: authored sample data" in card and "`B-Medication`" in card and "Medical disclaimer" in card


def test_predict_tags_text_with_the_merged_model(repo):
    text = "Fever after amoxicillin."
    medtune = str(Path(sys.executable).parent / "medtune")
    result = subprocess.run([medtune, "predict", "ner", text], cwd=repo, capture_output=True, text=True, check=True)
    entities = json.loads(result.stdout)
    assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)  # a tiny random model: spans, not quality


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
    assert checks["f16"]["top1_agreement"] == 1.0 and checks["q8_0"]["relative_logit_diff"] <= 0.1
    card = (out / "README.md").read_text()
    assert "| format_adherence |" in card and "terminology-q8_0.gguf" in card  # test metrics and the files
    set_root_config(repo, export={"tasks": []})
    assert stages_run(dvc(repo, "repro")) == set()


def test_an_evaluation_param_reruns_only_evaluate(repo):
    set_root_config(repo, eval={"batch_size": 2})
    assert stages_run(dvc(repo, "repro")) == {f"evaluate@{task}" for task in TASKS}


def test_a_change_to_one_tasks_config_reruns_only_that_task(repo):
    set_task_config(repo, "terminology", {"generation": {"max_new_tokens": 6}})
    assert stages_run(dvc(repo, "repro")) == {"evaluate@terminology"}
    set_task_config(repo, "simplification", {"system": "Use plain words."})
    ran = stages_run(dvc(repo, "repro"))
    assert ran == {"tokenize@simplification", "train@simplification", "merge@simplification", "evaluate@simplification"}


def test_an_experiment_on_lora_rank_reruns_train_merge_and_evaluate(repo):
    ran = stages_run(dvc(repo, "exp", "run", "-S", "peft.r=16"))
    assert ran == {f"{stage}@{task}" for stage in ("train", "merge", "evaluate") for task in TASKS}
    assert yaml.safe_load((repo / "params.yaml").read_text())["peft"]["r"] == 16  # dvc composed it from conf/


def test_switching_the_model_reruns_everything_downstream_of_base(repo):
    (repo / "conf/model/tiny-random-b.yaml").write_text(
        "defaults: [tiny-random, _self_]\nname: tiny-random-b\nweights: {init_seed: 1}\n"
    )
    ran = stages_run(dvc(repo, "exp", "run", "-S", "model=tiny-random-b"))
    assert ran == {"base"} | {f"{stage}@{task}" for stage in PER_TASK[1:] for task in TASKS}
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


def test_report_compares_an_experiment_with_the_baseline(repo):
    experiment = next(line.split()[0] for line in dvc(repo, "exp", "list", "--name-only").splitlines() if line.strip())
    run(repo, str(Path(sys.executable).parent / "medtune"), "report", "--against", "HEAD", "--rev", experiment)

    report = (repo / "metrics/report.md").read_text()
    assert re.search(r"\| `peft\.r` \| 8 \| [24] \|", report)
    assert "| `tasks.qa` | (run) | (not run) |" in report
    assert re.search(r"\| f1 \| [\d.]+ \| [\d.]+ \| .* \| (✅ better|❌ worse|= same) \|", report)
    figures = sorted((repo / "metrics/report").glob("*.png"))
    assert {"ner_confusion.png", "ner_training_loss.png", "ner_validation_loss.png"} <= {f.name for f in figures}
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in figures)
