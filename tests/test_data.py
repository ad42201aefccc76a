"""Reading raw QA data: formats, column mapping, bad records, duplicates, deterministic leakage-free splits."""

from __future__ import annotations

import csv
import json
import re

import pytest
from omegaconf import OmegaConf

from conftest import write_lines
from medtune import data
from medtune.config import DataConfig, compose_params, load_params
from medtune.errors import ConfigError, DataError

QA_COLUMNS = {"prompt": "question", "response": "answer"}


def qa_line(i: int, question: str | None = None, answer: str = "An answer.") -> str:
    return json.dumps({"id": f"q{i}", "question": question or f"Question {i}?", "answer": answer})


def local(path, **kw) -> DataConfig:
    return OmegaConf.structured(DataConfig(source="local", path=str(path), **kw))


def test_jsonl_records_are_mapped_and_whitespace_normalised(tmp_path):
    path = write_lines(
        tmp_path / "qa.jsonl",
        [
            json.dumps({"id": 7, "question": "  What is  anaemia?\r\n", "answer": "A low\t red cell count."}),
            "",
            qa_line(2),
        ],
    )
    records, problems = data.to_sft_records(data.read_rows(local(path), "tasks.qa.data"), QA_COLUMNS, "id", "error")
    assert records[0] == {"id": "7", "prompt": "What is anaemia?", "response": "A low red cell count."}
    assert [r["id"] for r in records] == ["7", "q2"] and problems == []


def test_csv_json_and_parquet_give_the_same_records(tmp_path):
    rows = [
        {"id": "a", "question": "Q one?", "answer": "A one."},
        {"id": "b", "question": "Q two?", "answer": "A two."},
    ]
    with open(tmp_path / "qa.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "question", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "qa.json").write_text(json.dumps(rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "qa.parquet")
    results = [
        data.to_sft_records(data.read_rows(local(tmp_path / name), "tasks.qa.data"), QA_COLUMNS, "id", "error")[0]
        for name in ("qa.csv", "qa.json", "qa.parquet")
    ]
    assert results[0] == results[1] == results[2]
    assert results[0][1] == {"id": "b", "prompt": "Q two?", "response": "A two."}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": "x", "question": "Q?", "answer": ', r"qa\.jsonl:3: not valid JSON"),
        ('{"id": "x", "question": "Q?", "answer": "   "}', r'qa\.jsonl:3: field "answer" is empty'),
        ('{"id": "x", "question": "Q?"}', r'qa\.jsonl:3: column "answer" \(mapped to response\) not found'),
        ('{"id": "x", "question": "Q?", "answer": 42}', r'qa\.jsonl:3: field "answer" must be text, got int'),
        ('["Q?", "A."]', r"qa\.jsonl:3: expected an object"),
        ('{"id": "q1", "question": "Q?", "answer": "A."}', r"qa\.jsonl:3: duplicate id 'q1'"),
    ],
)
def test_a_bad_record_names_file_line_and_problem(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(1), qa_line(2), bad_line, qa_line(4)])
    with pytest.raises(DataError, match=message):
        data.to_sft_records(data.read_rows(local(path), "tasks.qa.data"), QA_COLUMNS, "id", "error")


def test_on_invalid_drop_skips_and_reports_bad_records(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(1), qa_line(2, answer=""), qa_line(3)])
    records, problems = data.to_sft_records(data.read_rows(local(path), "tasks.qa.data"), QA_COLUMNS, "id", "drop")
    assert [r["id"] for r in records] == ["q1", "q3"]
    assert len(problems) == 1 and "qa.jsonl:2" in problems[0]


def test_a_wrong_column_mapping_fails_even_with_drop(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(1), qa_line(2)])
    with pytest.raises(DataError, match=r'no valid records; first problem: .*qa\.jsonl:1: column "Question"'):
        data.to_sft_records(
            data.read_rows(local(path), "tasks.qa.data"), {"prompt": "Question", "response": "answer"}, "id", "drop"
        )


def test_unreadable_files_are_reported(tmp_path):
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl: is not valid UTF-8"):
        data.read_rows(local(tmp_path / "latin1.jsonl"), "tasks.qa.data")
    with pytest.raises(DataError, match="file not found"):
        data.read_rows(local(tmp_path / "missing.jsonl"), "tasks.qa.data")
    (tmp_path / "qa.txt").write_text("Q? A.")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        data.read_rows(local(tmp_path / "qa.txt"), "tasks.qa.data")


def test_duplicates_after_normalisation_are_dropped():
    records = [
        {"id": "1", "prompt": "What is gout?", "response": "A form of arthritis."},
        {"id": "2", "prompt": "what is GOUT", "response": "A form of arthritis"},
        {"id": "3", "prompt": "What is gout?", "response": "Uric acid crystals in a joint."},
    ]
    kept, dropped = data.drop_duplicates(records)
    assert [r["id"] for r in kept] == ["1", "3"] and dropped == 1


def _records(n: int) -> list[dict]:
    return [{"id": str(i), "prompt": f"Question {i % (n // 2)}?", "response": f"Answer {i}."} for i in range(n)]


def test_split_is_deterministic_sized_and_keeps_same_prompts_together():
    splits = data.split_records(_records(100), 0.1, 0.1, 42, "qa.jsonl")
    assert splits == data.split_records(_records(100), 0.1, 0.1, 42, "qa.jsonl")
    assert splits != data.split_records(_records(100), 0.1, 0.1, 7, "qa.jsonl")
    assert [len(splits[s]) for s in data.SPLITS] == [80, 10, 10]  # prompts come in pairs, so sizes are exact
    owners = {}
    for name, records in splits.items():
        for r in records:
            assert owners.setdefault(r["prompt"], name) == name


def test_leakage_between_splits_is_refused():
    splits = {
        "train": [{"id": "1", "prompt": "What is gout?"}],
        "validation": [],
        "test": [{"id": "9", "prompt": "what is gout"}],
    }
    with pytest.raises(DataError, match="record 9: its text also occurs in the train split"):
        data.check_no_leakage(splits)


def test_a_split_that_would_be_empty_is_an_error():
    with pytest.raises(DataError, match=r"^qa\.jsonl: the validation split is empty with only 3 records: add records"):
        data.split_records(_records(4)[:3], 0.1, 0.1, 0, "qa.jsonl")


@pytest.mark.parametrize(
    ("task_config", "row"),
    [
        ("qa_medquad", {"qtype": "information", "Question": "What is gout?", "Answer": "A form of arthritis."}),
        (
            "qa_flashcards",
            {
                "instruction": "Answer this question truthfully",
                "input": "What is gout?",
                "output": "A form of arthritis.",
            },
        ),
    ],
)
def test_hub_task_configs_load_a_local_folder_shaped_like_the_hub_dataset(conf_project, tmp_path, task_config, row):
    """The real hub loader (datasets.load_dataset by id + revision) pointed at a local copy of the files."""
    hub_copy = tmp_path / "hub_copy"
    hub_copy.mkdir()
    other = {k: (v.replace("gout", "lupus") if isinstance(v, str) else v) for k, v in row.items()}
    write_lines(hub_copy / "train.jsonl", [json.dumps(row), json.dumps(other)])
    overrides = [f"task@tasks.qa={task_config}", f"tasks.qa.data.hub_id={hub_copy}"]
    params = load_params(compose_params(conf_project, overrides))
    cfg = params.tasks.qa.data
    records, _ = data.to_sft_records(
        data.read_rows(cfg, "tasks.qa.data"), dict(cfg.columns), cfg.id_column, cfg.on_invalid
    )
    assert records == [
        {"id": "row-000001", "prompt": "What is gout?", "response": "A form of arthritis."},
        {"id": "row-000002", "prompt": "What is lupus?", "response": "A form of arthritis."},
    ]


def test_a_hub_dataset_that_cannot_be_loaded_names_the_config_key_and_the_id(tmp_path):
    missing = tmp_path / "no-such-dataset"
    hub = OmegaConf.structured(DataConfig(source="hub", hub_id=str(missing), revision="v1"))
    with pytest.raises(ConfigError, match=rf"`tasks\.qa\.data\.hub_id`: cannot load {re.escape(str(missing))}@v1 \("):
        data.read_rows(hub, "tasks.qa.data")


def test_a_hub_split_the_dataset_lacks_names_the_config_key(tmp_path):
    write_lines(tmp_path / "train.jsonl", [qa_line(1)])
    hub = OmegaConf.structured(DataConfig(source="hub", hub_id=str(tmp_path), hub_split="validation"))
    with pytest.raises(ConfigError, match=r"`tasks\.qa\.data\.hub_split`: .*Unknown split \"validation\""):
        data.read_rows(hub, "tasks.qa.data")


def test_simplification_can_train_on_the_chatgpt_column_instead(conf_project, tmp_path):
    hub_copy = tmp_path / "hub_copy"
    hub_copy.mkdir()
    row = {
        "original": "Pt c/o SOB.",
        "human_simplification": "The patient is short of breath.",
        "chatgpt_simplification": "The patient says breathing is hard.",
    }
    write_lines(hub_copy / "train.jsonl", [json.dumps(row)])
    overrides = [
        "task@tasks.simplification=simplification_hub",
        f"tasks.simplification.data.hub_id={hub_copy}",
        "tasks.simplification.data.columns.response=chatgpt_simplification",
    ]
    cfg = load_params(compose_params(conf_project, overrides)).tasks.simplification.data
    records, _ = data.to_sft_records(
        data.read_rows(cfg, "tasks.simplification.data"), dict(cfg.columns), cfg.id_column, cfg.on_invalid
    )
    assert records[0]["response"] == "The patient says breathing is hard."


def test_generic_csv_simplification_config_maps_columns_and_drops_empty_rows(conf_project, tmp_path):
    params = load_params(compose_params(conf_project, ["task@tasks.simplification=simplification_csv"]))
    cfg = params.tasks.simplification
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text('complex,simple\n"Pt is afebrile, HR 72.","No fever; pulse 72."\nHTN noted.,\n')
    data_cfg = OmegaConf.merge(cfg.data, {"path": str(csv_path)})
    records, problems = data.to_sft_records(
        data.read_rows(data_cfg, "tasks.simplification.data"),
        dict(data_cfg.columns),
        data_cfg.id_column,
        data_cfg.on_invalid,
    )
    assert records == [{"id": "row-000001", "prompt": "Pt is afebrile, HR 72.", "response": "No fever; pulse 72."}]
    assert problems == [f'{csv_path}:3: field "simple" is empty']


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "s3", "source": "", "target": "Plain."}, r'simplification\.jsonl:3: field "source" is empty'),
        ({"id": "s3", "source": "Complex.", "target": "  "}, r'simplification\.jsonl:3: field "target" is empty'),
        (
            {"id": "s3", "source": "Complex."},
            r'simplification\.jsonl:3: column "target" \(mapped to response\) not found',
        ),
    ],
)
def test_bad_simplification_records_name_file_and_line(tmp_path, row, message):
    good = [json.dumps({"id": f"s{i}", "source": f"Complex {i}.", "target": f"Plain {i}."}) for i in (1, 2)]
    path = write_lines(tmp_path / "simplification.jsonl", [*good, json.dumps(row)])
    with pytest.raises(DataError, match=message):
        data.to_sft_records(
            data.read_rows(local(path), "tasks.simplification.data"),
            {"prompt": "source", "response": "target"},
            "id",
            "error",
        )
