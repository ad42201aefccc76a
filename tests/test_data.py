"""Reading raw QA data: formats, column mapping, bad records, duplicates, deterministic leakage-free splits."""

from __future__ import annotations

import csv
import json
import re

import pytest
from omegaconf import OmegaConf

from conftest import a_data, write_lines
from conftest import a_task as task_with
from medtune import checks, data
from medtune.config import DataConfig, TaskConfig, compose_params, load_params
from medtune.errors import ConfigError, DataError

QA_COLUMNS = {"prompt": "question", "response": "answer"}


def train_rows(cfg, key: str) -> list:
    """The rows a task with no named splits reads: all go to its train source."""
    return data.read_source(cfg, key).splits["train"]


def qa_line(i: int, question: str | None = None, answer: str = "An answer.") -> str:
    return json.dumps({"id": f"q{i}", "question": question or f"Question {i}?", "answer": answer})


def local(path, **kw) -> DataConfig:
    return a_data(source="local", path=str(path), **kw)


def test_jsonl_records_are_mapped_and_whitespace_normalised(tmp_path):
    path = write_lines(
        tmp_path / "qa.jsonl",
        [
            json.dumps({"id": 7, "question": "  What is  anaemia?\r\n", "answer": "A low\t red cell count."}),
            "",
            qa_line(2),
        ],
    )
    records, problems = data.to_sft_records(train_rows(local(path), "tasks.qa.data"), QA_COLUMNS, "id", "error")
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
        data.to_sft_records(train_rows(local(tmp_path / name), "tasks.qa.data"), QA_COLUMNS, "id", "error")[0]
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
        data.to_sft_records(train_rows(local(path), "tasks.qa.data"), QA_COLUMNS, "id", "error")


def test_on_invalid_drop_skips_and_reports_bad_records(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(1), qa_line(2, answer=""), qa_line(3)])
    records, problems = data.to_sft_records(train_rows(local(path), "tasks.qa.data"), QA_COLUMNS, "id", "drop")
    assert [r["id"] for r in records] == ["q1", "q3"]
    assert len(problems) == 1 and "qa.jsonl:2" in problems[0]


def test_a_wrong_column_mapping_fails_even_with_drop(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [qa_line(1), qa_line(2)])
    with pytest.raises(DataError, match=r'no valid records; first problem: .*qa\.jsonl:1: column "Question"'):
        data.to_sft_records(
            train_rows(local(path), "tasks.qa.data"), {"prompt": "Question", "response": "answer"}, "id", "drop"
        )


def test_unreadable_files_are_reported(tmp_path):
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl: is not valid UTF-8"):
        train_rows(local(tmp_path / "latin1.jsonl"), "tasks.qa.data")
    with pytest.raises(DataError, match="file not found"):
        train_rows(local(tmp_path / "missing.jsonl"), "tasks.qa.data")
    (tmp_path / "qa.xml").write_text("<q>Q?</q>")
    with pytest.raises(
        DataError, match=r"unsupported file type '\.xml'; use one of .*\.tsv, \.txt, \.iob, \.bio \(CoNLL\)"
    ):
        train_rows(local(tmp_path / "qa.xml"), "tasks.qa.data")


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
    shares = {"validation": 0.1, "test": 0.1}
    splits = data.split_records(_records(100), shares, 42, "qa.jsonl")
    assert splits == data.split_records(_records(100), shares, 42, "qa.jsonl")
    assert splits != data.split_records(_records(100), shares, 7, "qa.jsonl")
    assert [len(splits[s]) for s in data.SPLITS] == [80, 10, 10]  # prompts come in pairs, so sizes are exact
    owners = {}
    for name, records in splits.items():
        for r in records:
            assert owners.setdefault(r["prompt"], name) == name


def test_leakage_between_named_splits_is_counted_per_pair_of_splits():
    splits = {
        "train": [{"id": "1", "prompt": "What is gout?"}, {"id": "2", "prompt": "What is flu?"}],
        "validation": [{"id": "5", "prompt": "What is flu ?"}],
        "test": [{"id": "9", "prompt": "what is gout"}, {"id": "10", "prompt": "What is flu?"}],
    }
    assert data.count_leakage(splits) == {"train~validation": 1, "train~test": 2, "validation~test": 1}
    assert data.count_leakage({"train": splits["train"], "test": [{"id": "3", "prompt": "What is mumps?"}]}) == {}


def test_a_split_that_would_be_empty_is_an_error():
    with pytest.raises(DataError, match=r"^qa\.jsonl: the validation split is empty with only 3 records: add records"):
        data.split_records(_records(4)[:3], {"validation": 0.1, "test": 0.1}, 0, "qa.jsonl")


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
    records, _ = data.to_sft_records(train_rows(cfg, "tasks.qa.data"), dict(cfg.columns), cfg.id_column, cfg.on_invalid)
    assert records == [
        {"id": "row-000001", "prompt": "What is gout?", "response": "A form of arthritis."},
        {"id": "row-000002", "prompt": "What is lupus?", "response": "A form of arthritis."},
    ]


def test_a_hub_dataset_that_cannot_be_loaded_names_the_config_key_and_the_id(tmp_path):
    missing = tmp_path / "no-such-dataset"
    hub = a_data(source="hub", hub_id=str(missing), revision="v1")
    with pytest.raises(ConfigError, match=rf"`tasks\.qa\.data\.hub_id`: cannot load {re.escape(str(missing))}@v1 \("):
        train_rows(hub, "tasks.qa.data")


def test_a_hub_split_the_dataset_lacks_names_the_config_key(tmp_path):
    write_lines(tmp_path / "train.jsonl", [qa_line(1)])
    hub = a_data(source="hub", hub_id=str(tmp_path), hub_split="validation")
    with pytest.raises(ConfigError, match=r"`tasks\.qa\.data\.hub_split`: .*Unknown split \"validation\""):
        train_rows(hub, "tasks.qa.data")


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
        train_rows(cfg, "tasks.simplification.data"), dict(cfg.columns), cfg.id_column, cfg.on_invalid
    )
    assert records[0]["response"] == "The patient says breathing is hard."


def test_generic_csv_simplification_config_maps_columns_and_drops_empty_rows(conf_project, tmp_path):
    params = load_params(compose_params(conf_project, ["task@tasks.simplification=simplification_csv"]))
    cfg = params.tasks.simplification
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text('complex,simple\n"Pt is afebrile, HR 72.","No fever; pulse 72."\nHTN noted.,\n')
    data_cfg = OmegaConf.merge(cfg.data, {"path": str(csv_path)})
    records, problems = data.to_sft_records(
        train_rows(data_cfg, "tasks.simplification.data"),
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
            train_rows(local(path), "tasks.simplification.data"),
            {"prompt": "source", "response": "target"},
            "id",
            "error",
        )


# CoNLL files as corpora ship them, IOBES tags, chat-format sft rows (issue 20)

TOKENS_TAGS = {"tokens": "tokens", "tags": "tags"}
DM_LABELS = ["O", "B-Disease", "I-Disease", "B-Medication", "I-Medication"]
CONLL_LINES = [
    "-DOCSTART- -X- -X- O",
    "",
    "# sent_id = 1",
    "# text = Aspirin relieved the headache .",
    "Aspirin NN B-NP B-Medication",
    "relieved VBD B-VP O",
    "the DT B-NP O",
    "headache NN I-NP B-Disease",
    ". . O O",
    "",
    "",
    "Metformin\tB-Medication",
    "lowers\tO",
    "glucose\tO",
]


@pytest.mark.parametrize("suffix", [".conll", ".tsv", ".txt", ".iob", ".bio", ".TSV"])
def test_conll_is_read_from_its_usual_extensions_with_the_tag_in_the_last_column(tmp_path, suffix):
    path = write_lines(tmp_path / f"ner{suffix}", CONLL_LINES)
    assert list(data.read_local_rows(path)) == [
        (
            f"{path}:5",
            {
                "tokens": ["Aspirin", "relieved", "the", "headache", "."],
                "tags": ["B-Medication", "O", "O", "B-Disease", "O"],
            },
        ),
        (f"{path}:12", {"tokens": ["Metformin", "lowers", "glucose"], "tags": ["B-Medication", "O", "O"]}),
    ]


def test_a_hash_line_with_a_tag_is_a_token_not_a_comment(tmp_path):
    lines = ["# newdoc", "# sent_id = 7", "# text = Rib #5 fractured .", "Rib\tO", "#5\tO", "fractured\tO", ""]
    lines += ["# text = vitamin B-12", "# NN O", "2 CD O", "doses NNS O"]  # `= ... B-12`: a comment, not a tag
    path = write_lines(tmp_path / "ner.tsv", lines)
    assert list(data.read_local_rows(path)) == [
        (f"{path}:4", {"tokens": ["Rib", "#5", "fractured"], "tags": ["O"] * 3}),
        (f"{path}:9", {"tokens": ["#", "2", "doses"], "tags": ["O"] * 3}),
    ]


def tagged(tmp_path, lines: list[str], **kw) -> list[dict]:
    rows = list(data.read_local_rows(write_lines(tmp_path / "ner.tsv", lines)))
    return data.to_token_records(rows, TOKENS_TAGS, None, "error", DM_LABELS, **kw)[0]


def test_iobes_tags_are_read_as_iob2(tmp_path):
    lines = ["Type\tB-Disease", "2\tI-Disease", "diabetes\tE-Disease", "on\tO", "insulin\tS-Medication"]
    [record] = tagged(tmp_path, lines, tag_scheme="iobes")
    assert record["tags"] == ["B-Disease", "I-Disease", "I-Disease", "O", "B-Medication"]
    hf_row = {"words": ["Gout", "flare"], "ner_tags": [1, 0]}  # integer tags naming IOBES labels
    rows = list(data.read_local_rows(write_lines(tmp_path / "ner.jsonl", [json.dumps(hf_row)])))
    records, _ = data.to_token_records(
        rows, {"tokens": "words", "tags": "ner_tags"}, None, "error", DM_LABELS, ["O", "S-Disease"], tag_scheme="iobes"
    )
    assert records[0]["tags"] == ["B-Disease", "O"]


def test_an_iobes_tag_in_iob2_data_names_the_line_and_the_setting(tmp_path):
    with pytest.raises(
        DataError,
        match=r"ner\.tsv:1: token 3: 'S-Disease' is an IOBES tag, not IOB2: set tasks\.<task>\.data\.tag_scheme: iobes",
    ):
        tagged(tmp_path, ["Patient\tO", "has\tO", "gout\tS-Disease"])


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("O E-Disease", r"token 2: I-Disease does not follow B-Disease"),  # E- is I- after conversion: checked
        ("S-Drug O", r"token 1: unknown tag 'S-Drug' \(B-Drug in IOB2; the task's labels: O, B-Disease"),
        ("U-Disease O", r"token 1: malformed tag 'U-Disease' \(expected O, B-, I-, E- or S-<Type>"),
    ],
)
def test_iobes_tags_are_checked_after_conversion(tmp_path, tags, message):
    lines = [f"{word}\t{tag}" for word, tag in zip(["severe", "asthma"], tags.split(), strict=True)]
    with pytest.raises(DataError, match=rf"ner\.tsv:1: {message}"):
        tagged(tmp_path, lines, tag_scheme="iobes")
    if "follow" in message:
        assert tagged(tmp_path, lines, tag_scheme="iobes", orphan_inside="repair")[0]["tags"] == ["O", "B-Disease"]


def a_task(kind: str, columns: dict, **data_kw) -> TaskConfig:
    data_cfg = a_data(path="data/raw/data.jsonl", columns=columns, **data_kw)
    return task_with(kind=kind, data=data_cfg, labels=DM_LABELS)


@pytest.mark.parametrize(
    ("kind", "columns", "tag_scheme", "message"),
    [
        ("token_classification", TOKENS_TAGS, "bilou", r"`tasks\.t\.data\.tag_scheme`: must be 'iob2' or 'iobes'"),
        ("sft", QA_COLUMNS, "iobes", r"`tasks\.t\.data\.tag_scheme`: .*token_classification"),
        ("token_classification", {"text": "t", "entities": "e"}, "iobes", r"`tasks\.t\.data\.tag_scheme`: .*tags"),
        ("sft", {"messages": "messages", "prompt": "q"}, "iob2", r"`tasks\.t\.data\.columns`: .*not both"),
    ],
)
def test_formats_no_data_could_satisfy_are_refused_by_config_key(kind, columns, tag_scheme, message):
    with pytest.raises(ConfigError, match=message):
        checks.check_task(a_task(kind, columns, tag_scheme=tag_scheme), "tasks.t")


def test_chat_columns_and_iobes_tags_are_valid_task_settings():
    checks.check_task(a_task("sft", {"messages": "conversations"}), "tasks.t")
    checks.check_task(a_task("token_classification", TOKENS_TAGS, tag_scheme="iobes"), "tasks.t")


def chat(*turns: tuple[str, str], key: str = "messages", role: str = "role", content: str = "content") -> str:
    return json.dumps({key: [{role: r, content: c} for r, c in turns]})


def chat_records(tmp_path, lines: list[str], columns: dict | None = None) -> list[dict]:
    rows = list(data.read_local_rows(write_lines(tmp_path / "chat.jsonl", lines)))
    return data.to_sft_records(rows, columns or {"messages": "messages"}, None, "error")[0]


WARFARIN = [
    ("system", "You are a careful pharmacist."),
    ("user", "I take warfarin."),
    ("assistant", "Noted. Warfarin is an anticoagulant."),
    ("user", "Can I take  ibuprofen for a headache?"),
    ("assistant", "Ask your doctor first: ibuprofen raises the bleeding risk with warfarin."),
]


def test_a_chat_row_becomes_prompt_and_response_with_its_system_and_history(tmp_path):
    single = chat(("user", "What is gout?"), ("assistant", "A form of arthritis."))
    assert chat_records(tmp_path, [chat(*WARFARIN), single]) == [
        {
            "id": "row-000001",
            "prompt": "Can I take ibuprofen for a headache?",
            "response": "Ask your doctor first: ibuprofen raises the bleeding risk with warfarin.",
            "system": "You are a careful pharmacist.",
            "history": [
                {"role": "user", "content": "I take warfarin."},
                {"role": "assistant", "content": "Noted. Warfarin is an anticoagulant."},
            ],
        },
        {"id": "row-000002", "prompt": "What is gout?", "response": "A form of arthritis."},  # no new keys
    ]


def test_sharegpt_conversations_read_like_messages(tmp_path):
    roles = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = chat(*[(roles[r], c) for r, c in WARFARIN], key="conversations", role="from", content="value")
    from_sharegpt = chat_records(tmp_path, [sharegpt], {"messages": "conversations"})
    assert from_sharegpt == chat_records(tmp_path, [chat(*WARFARIN)])


USER, ASSISTANT = {"role": "user", "content": "What is gout?"}, {"role": "assistant", "content": "Arthritis."}


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("What is gout?", r"column \"messages\" must be a list of turns, got str"),
        ([["user", "What is gout?"], ASSISTANT], r"turn 1: expected an object with role and content"),
        ([{"role": "user"}, ASSISTANT], r"turn 1: expected an object with role and content"),
        ([{"role": "doctor", "content": "Hi."}, ASSISTANT], r"turn 1: unknown role 'doctor' \(use system, user"),
        ([{"role": "user", "content": 5}, ASSISTANT], r"turn 1: content must be text, got int"),
        ([USER, {"role": "assistant", "content": "  "}], r"turn 2: empty content"),
        ([USER], r"no assistant turn"),
        ([USER, ASSISTANT, USER], r"the last turn is user, not assistant: it must be the response"),
        ([{"role": "system", "content": "Be brief."}, ASSISTANT], r"no user turn right before the last assistant"),
        ([USER, ASSISTANT, ASSISTANT], r"no user turn right before the last assistant turn \(turn 3\)"),
        ([USER, {"role": "system", "content": "Be brief."}, ASSISTANT], r"turn 2: a system turn must be the first"),
    ],
)
def test_a_bad_chat_row_names_file_line_and_problem(tmp_path, messages, message):
    lines = [
        chat(("user", "What is lupus?"), ("assistant", "An autoimmune disease.")),
        json.dumps({"messages": messages}),
    ]
    with pytest.raises(DataError, match=rf"chat\.jsonl:2: {message}"):
        chat_records(tmp_path, lines)


def test_the_leakage_key_of_a_chat_record_is_its_history_and_prompt(tmp_path):
    [record] = chat_records(tmp_path, [chat(*WARFARIN)])
    history_and_prompt = "I take warfarin. Noted. Warfarin is an anticoagulant. Can I take ibuprofen for a headache?"
    assert data.record_text(record) == history_and_prompt
    assert data.record_text({"id": "2", "prompt": "What is gout?", "response": "Arthritis."}) == "What is gout?"
    turns = "user: I take warfarin. assistant: Noted. Warfarin is an anticoagulant."
    assert data.field_text(record["history"]) == turns  # a history as one text, to compare records by
    assert data.field_text(["B-Disease", "O"]) == "B-Disease O" and data.field_text("Gout.") == "Gout."
