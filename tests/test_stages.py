"""Stages on bad input: one clear line naming file, line and problem; no output left behind."""

from __future__ import annotations

import json

import yaml

from conftest import make_project, qa, run_stage


def test_prepare_writes_splits_and_stats(tmp_path):
    project = make_project(tmp_path, [qa(i) for i in range(30)])
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 0, result.stderr
    stats = json.loads((project / "data/prepared/qa/stats.json").read_text())
    assert (stats["train"], stats["validation"], stats["test"]) == (24, 3, 3)
    lines = (project / "data/prepared/qa/test.jsonl").read_text().splitlines()
    assert set(json.loads(lines[0])) == {"id", "prompt", "response"}


def test_prepare_stops_at_an_empty_field_and_writes_nothing(tmp_path):
    project = make_project(tmp_path, [qa(1), qa(2), qa(3, answer=""), *[qa(i) for i in range(4, 30)]])
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 1
    assert 'error: data/raw/qa.jsonl:3: field "answer" is empty' in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "data" / "prepared").exists() or not any((project / "data" / "prepared").iterdir())


def test_prepare_with_on_invalid_drop_counts_what_it_dropped(tmp_path):
    lines = [qa(1), "{not json", qa(3, answer=" "), *[qa(i) for i in range(4, 30)]]
    project = make_project(tmp_path, lines, ["tasks.qa.data.on_invalid=drop"])
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 0, result.stderr
    stats = json.loads((project / "data/prepared/qa/stats.json").read_text())
    assert stats["invalid_dropped"] == 2
    assert stats["invalid_examples"][0].startswith("data/raw/qa.jsonl:2: not valid JSON")
    assert stats["invalid_examples"][1] == 'data/raw/qa.jsonl:3: field "answer" is empty'
    assert stats["train"] + stats["validation"] + stats["test"] == 27


def test_a_misspelled_key_in_params_yaml_stops_the_stage_with_a_suggestion(tmp_path):
    project = make_project(tmp_path, [qa(i) for i in range(30)])
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tasks"]["qa"]["splt"] = params["tasks"]["qa"].pop("split")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 1
    assert "config key `tasks.qa.splt`" in result.stderr and "did you mean `split`?" in result.stderr
    assert not (project / "data" / "prepared").exists()


def test_an_unreachable_hub_dataset_says_how_to_get_it(tmp_path):
    project = make_project(tmp_path, [qa(1)], ["task@tasks.qa=qa_medquad"])
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "config key `tasks.qa.data.hub_id`: cannot load keivalya/MedQuad-MedicalQnADataset@" in result.stderr
    assert "LocalEntryNotFoundError" in result.stderr  # STAGE_ENV: offline, so it fails at once
    assert "hf download --repo-type dataset keivalya/MedQuad-MedicalQnADataset" in result.stderr


def test_prepare_reads_chat_rows_and_keeps_their_system_and_history(tmp_path):
    def chat(i: int) -> str:
        turns = [
            {"role": "system", "content": "You explain medicines simply."},
            {"role": "user", "content": f"What is drug number {i}?"},
            {"role": "assistant", "content": "A medicine for high blood pressure."},
            {"role": "user", "content": f"How often do I take drug number {i}?"},
            {"role": "assistant", "content": "Once a day, as your prescriber said."},
        ]
        return json.dumps({"id": f"chat-{i}", "messages": turns})

    project = make_project(
        tmp_path, [chat(i) for i in range(30)], ["~tasks.qa.data.columns", "+tasks.qa.data.columns={messages:messages}"]
    )
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 0, result.stderr
    record = json.loads((project / "data/prepared/qa/train.jsonl").read_text().splitlines()[0])
    assert record["response"] == "Once a day, as your prescriber said."
    assert record["system"] == "You explain medicines simply." and record["prompt"].startswith("How often do I take")
    assert [turn["role"] for turn in record["history"]] == ["user", "assistant"]
