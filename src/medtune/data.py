"""Raw datasets -> validated, normalised, de-duplicated, leakage-free splits of prepared records.

Local files are read by our own small readers rather than `datasets.load_dataset`, because every bad
record must be reported as `file:line` (or `file (record N)`), which the generic loaders cannot do.
Hub datasets go through `datasets.load_dataset` by id and pinned revision.
This module knows no tokenizer and no model.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from omegaconf import ListConfig

from medtune import hub
from medtune.errors import ConfigError, DataError

Row = tuple[str, Any]  # (where: "file:line" or "file (record N)", the row as read, or a DataError if unparseable)
SPLITS = ("train", "validation", "test")
SFT_FIELDS = ("prompt", "response")
TOKEN_LAYOUTS = ({"tokens", "tags"}, {"text", "entities"})  # the two column layouts of token_classification data
SOURCES = ("local", "hub")
ON_INVALID = ("error", "drop")  # a bad record stops prepare, or is skipped and counted
ON_LEAKAGE = ("warn", "error")  # the same text in two named splits: counted in stats.json and logged, or refused
ORPHAN_INSIDE = ("error", "repair")  # an I-X without B-X before it is refused, or read as B-X
IOB2_TAG = re.compile(r"^(O|[BI]-[A-Za-z][\w-]*)$")
IOBES_TAG = re.compile(r"^(O|[BIES]-[A-Za-z][\w-]*)$")
ANY_TAG = re.compile(r"^(O|[A-Z]-\S+)$")  # what a CoNLL tag column looks like, in any scheme
TAG_SCHEMES = ("iob2", "iobes")  # the tag scheme of tokens/tags data; iobes (S-X, E-X) is read as IOB2
CONLL_SUFFIXES = (".conll", ".tsv", ".txt", ".iob", ".bio")  # all read as CoNLL
CHAT_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}
WORD = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]")  # words (with inner - ' .) and single punctuation marks
SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can escape half of a UTF-16 pair (\\ud800); UTF-8 cannot hold it


def check_task(task: Any, key: str) -> None:
    """Refuse data settings of a task (`key`: its config key, `tasks.<name>`) that no dataset could satisfy.

    `config.validate` calls this when params are read, so a wrong value fails before any stage runs and the
    error names the task's own key; the functions below take a checked task and do not check again.
    """
    data = task.data
    _check_choice(f"{key}.data.source", data.source, SOURCES)
    _check_data_path(data, f"{key}.data")
    if data.source == "hub" and not data.hub_id:
        raise ConfigError(f"{key}.data.hub_id", "is empty; set the dataset id, e.g. keivalya/MedQuad-MedicalQnADataset")
    _check_choice(f"{key}.data.on_invalid", data.on_invalid, ON_INVALID)
    _check_choice(f"{key}.data.on_leakage", data.on_leakage, ON_LEAKAGE)
    _check_named_splits(data, f"{key}.data")
    unknown = sorted(set(data.split_max_records) - set(SPLITS))
    if unknown:
        raise ConfigError(f"{key}.data.split_max_records", f"unknown split {unknown[0]!r}; use {', '.join(SPLITS)}")
    carved = carved_shares(task)
    for name, share in carved.items():  # training evaluates on validation, the evaluate stage reports on test
        if not 0 < share < 1:
            raise ConfigError(f"{key}.split.{name}", f"must be a share above 0 and below 1 (e.g. 0.1), not {share}")
    if sum(carved.values()) >= 1:
        shares = " and ".join(f"{name}={share}" for name, share in carved.items())
        raise ConfigError(f"{key}.split", f"{shares} leave no train split: their sum must be below 1")
    if task.kind == "sft":
        missing = [] if "messages" in data.columns else [f for f in SFT_FIELDS if f not in data.columns]
        if missing:
            raise ConfigError(f"{key}.data.columns", f"must map {', '.join(missing)} to a source column")
        check_formats(task, key)
        return
    if not any(layout <= data.columns.keys() for layout in TOKEN_LAYOUTS):
        raise ConfigError(f"{key}.data.columns", "must map `tokens` and `tags`, or `text` and `entities`")
    _check_choice(f"{key}.orphan_inside", task.orphan_inside, ORPHAN_INSIDE)
    _check_labels(list(task.labels), f"{key}.labels")
    check_formats(task, key)


def check_formats(task: Any, key: str) -> None:
    """The settings of the data formats a task reads (`check_task` calls this last): the tag scheme of tokens/tags
    data (`iob2`, or `iobes`, read as IOB2), and the chat layout of sft data (`columns: {messages: <column>}`)."""
    data = task.data
    _check_choice(f"{key}.data.tag_scheme", data.tag_scheme, TAG_SCHEMES)
    if data.tag_scheme != "iob2" and task.kind != "token_classification":
        raise ConfigError(f"{key}.data.tag_scheme", "only applies to token_classification tasks; remove it")
    if data.tag_scheme != "iob2" and not {"tokens", "tags"} <= data.columns.keys():
        raise ConfigError(
            f"{key}.data.tag_scheme", "only applies to `tokens` and `tags` columns (`text` and `entities` make IOB2)"
        )
    both = [f for f in SFT_FIELDS if f in data.columns]
    if task.kind == "sft" and "messages" in data.columns and both:
        raise ConfigError(
            f"{key}.data.columns",
            f"maps messages (a chat per row) and {' and '.join(both)}: map one layout, not both",
        )


def _check_data_path(data: Any, key: str) -> None:
    """`path` is the file or folder DVC tracks as this task's data (dvc.yaml: prepare's deps): inside the project,
    given relative to its root. A hub dataset names the file that pins it (its task config) or its local folder."""
    if not data.path:
        what = "file or folder" if data.source == "local" else "task config file (e.g. conf/task/qa_medquad.yaml)"
        raise ConfigError(f"{key}.path", f"is empty; set the {what} DVC tracks for this task's prepare stage")
    path = PurePosixPath(data.path)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(
            f"{key}.path",
            f"{data.path} is outside the project, where DVC cannot track it: give a path inside the project, relative "
            "to its root. Copy the data in and `dvc add` it (git then keeps a small pointer file), or "
            "`dvc import-url <url> data/<name>` to record where it came from (docs/data.md)",
        )


def _check_named_splits(data: Any, key: str) -> None:
    """`splits`: the task's own splits, by name. Local: a file or a list of files inside the `path` folder; hub: the
    dataset's split name. Train must be among them; the splits not named are carved from train."""
    if not data.splits:
        return
    unknown = sorted(set(data.splits) - set(SPLITS))
    if unknown:
        raise ConfigError(f"{key}.splits", f"unknown split {unknown[0]!r}; name train, validation or test")
    if "train" not in data.splits:
        raise ConfigError(f"{key}.splits", "must name train (the splits not named are carved from it)")
    for name, value in data.splits.items():
        files = split_files(value)
        if data.source == "hub" and not isinstance(value, str):
            raise ConfigError(f"{key}.splits.{name}", f"a hub split is one name, e.g. {name}, not {value!r}")
        if not files or any(not isinstance(f, str) or not f.strip() for f in files):
            raise ConfigError(f"{key}.splits.{name}", f"must be a file name or a list of them, not {value!r}")
        outside = [f for f in files if PurePosixPath(f).is_absolute() or ".." in PurePosixPath(f).parts]
        if data.source == "local" and outside:
            inside = f"must be a file inside {key}.path ({data.path}), given relative to it"
            raise ConfigError(f"{key}.splits.{name}", f"{outside[0]} {inside}")


def split_files(value: Any) -> list:
    """The files (or the hub split name) a `splits` entry names: one, or a list."""
    return [value] if isinstance(value, str) else list(value) if isinstance(value, list | ListConfig) else []


def carved_shares(task: Any) -> dict[str, float]:
    """The shares of the splits carved from train by seed: validation and test, unless the task names them."""
    return {name: task.split[name] for name in ("validation", "test") if name not in task.data.splits}


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"must be {' or '.join(map(repr, allowed))}, not {value!r}")


def _check_labels(labels: list[str], key: str) -> None:
    """The IOB2 label list of a token classification task: O first (label id 0), then B-/I- labels, no repeats."""
    if not labels or labels[0] != "O":
        raise ConfigError(key, f"must list O first, then the B-<Type> and I-<Type> labels; got {labels}")
    malformed = [label for label in labels if not IOB2_TAG.match(label)]
    if malformed:
        raise ConfigError(key, f"{malformed[0]!r} is not an IOB2 label (O, B-<Type> or I-<Type>)")
    repeated = [label for label in labels if labels.count(label) > 1]
    if repeated:
        raise ConfigError(key, f"{repeated[0]!r} is listed twice")


def source_name(data: Any) -> str:
    """How logs, stats.json and errors name a task's data: the local path, or `hub_id@revision`."""
    return data.path if data.source == "local" else f"{data.hub_id}@{data.revision or 'main'}"


@dataclass
class Source:
    """What a task's data source gave: the rows of each split it names (train alone when it names none)."""

    splits: dict[str, list[Row]]
    commit: str | None = None  # a hub dataset's resolved commit: what to pin `revision` to
    tag_names: list[str] | None = None  # a hub dataset's names of integer tags (its ClassLabel feature)


def read_source(data: Any, key: str) -> Source:
    """Read the rows of each split a task's checked data source names (`key`: its config key,
    `tasks.<name>.data`), each row tagged with where it came from."""
    if data.source == "hub":
        return read_hub_source(data, key)
    if not data.splits:
        return Source({"train": read_file_rows(Path(data.path))})
    folder = Path(data.path)
    if not folder.is_dir():
        raise DataError(data.path, f"is not a folder, but {key}.splits names files inside it")
    return Source(
        {name: [row for f in split_files(v) for row in read_file_rows(folder / f)] for name, v in data.splits.items()}
    )


def read_file_rows(path: Path) -> list[Row]:
    """Every row of one local data file; a file without any is a DataError."""
    rows = list(read_local_rows(path))
    if not rows:
        raise DataError(str(path), "has no records")
    return rows


def read_local_rows(path: Path) -> Iterator[Row]:
    """Rows of a local JSONL/JSON/CSV/Parquet/CoNLL file; a file that cannot be parsed raises DataError.

    `.tsv`, `.txt`, `.iob` and `.bio` are read as CoNLL (one token per line, as NER corpora ship them), never as
    tab-separated columns with a header or as free text: in medtune only token classification reads lines.
    """
    if not path.is_file():
        raise DataError(str(path), "file not found")
    readers = {
        ".jsonl": _jsonl_rows,
        ".json": _json_rows,
        ".csv": _csv_rows,
        ".parquet": _parquet_rows,
        **dict.fromkeys(CONLL_SUFFIXES, _conll_rows),
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            str(path),
            f"unsupported file type {path.suffix!r}; use one of .jsonl, .json, .csv, .parquet, "
            f"or {', '.join(CONLL_SUFFIXES)} (CoNLL)",
        )
    try:
        yield from reader(path)
    except UnicodeDecodeError as err:
        raise DataError(str(path), f"is not valid UTF-8 (byte {err.start})") from None


def _text_lines(path: Path, newline: str | None = None) -> Iterator[tuple[int, str]]:
    """Numbered lines of a UTF-8 text file, without its BOM. A NUL is never in text: the file is UTF-16 or binary
    and would be read as garbled records, so it is refused at its line."""
    with open(path, encoding="utf-8-sig", newline=newline) as f:
        for n, line in enumerate(f, start=1):
            if "\x00" in line:
                raise DataError(f"{path}:{n}", "has a NUL byte: the file is binary or UTF-16; save it as UTF-8 text")
            yield n, line


def _parse_json(text: str) -> Any:
    """`json.loads`, raising only JSONDecodeError (with the position) or ValueError. Python's parser also stops,
    with other errors, on an integer longer than `int()` takes (4300 digits) and on nesting deeper than its
    recursion limit: the first is given the position of the long number, the second has none."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        number = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1},}}", text)
        raise json.JSONDecodeError("a number has too many digits", text, number.start() if number else 0) from None
    except RecursionError:
        raise ValueError("arrays or objects are nested too deeply") from None


def _non_json_problem(value: Any) -> str | None:
    """What Python's json accepts but JSON does not: NaN and Infinity (also an overflowing number such as 1e999),
    and an unpaired surrogate escape, which would fail later, when a stage writes the record as UTF-8."""
    stack = [value]
    while stack:  # a loop, not recursion: what the parser could nest, this must not overflow on
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{item} is not a JSON number"
        if isinstance(item, str) and SURROGATE.search(item):
            return "a string has an unpaired surrogate escape (\\ud800-\\udfff), which is not text"
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _jsonl_rows(path: Path) -> Iterator[Row]:
    for n, line in _text_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = _parse_json(line)
            problem = _non_json_problem(row)
        except json.JSONDecodeError as err:
            problem = f"{err.msg} at column {err.colno}"
        except ValueError as err:
            problem = str(err)
        # a bad record like any other: `on_invalid` decides
        yield where, DataError(where, f"not valid JSON ({problem})") if problem else row


def _json_rows(path: Path) -> Iterator[Row]:
    try:
        rows = _parse_json(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}", f"not valid JSON ({err.msg})") from None
    except ValueError as err:
        raise DataError(str(path), f"not valid JSON ({err})") from None
    if not isinstance(rows, list):
        raise DataError(str(path), "a .json dataset must be a list of objects")
    for i, row in enumerate(rows, start=1):
        where = f"{path} (record {i})"
        problem = _non_json_problem(row)
        yield where, DataError(where, f"not valid JSON ({problem})") if problem else row


def _csv_rows(path: Path) -> Iterator[Row]:
    reader = csv.DictReader(line for _, line in _text_lines(path, newline=""))
    start = 1  # the first line of the record being read
    try:
        if reader.fieldnames:  # reads the header
            start = reader.line_num + 1
        for row in reader:
            # line_num is the last physical line read, so quoted multi-line fields still point at the record
            if None in row:
                raise DataError(f"{path}:{reader.line_num}", "more fields than the header has")
            yield f"{path}:{reader.line_num}", row
            start = reader.line_num + 1
    except csv.Error as err:  # a field over csv's limit (128 KiB) is mostly an unclosed quote eating the file
        raise DataError(f"{path}:{start}", f"not valid CSV ({err}); is a quote left open?") from None


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(str(path), f"not a readable Parquet file ({err})") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield f"{path} (record {i})", row


def _conll_rows(path: Path) -> Iterator[Row]:
    """CoNLL (`.conll`, `.tsv`, `.txt`, `.iob`, `.bio`): one token per line, the token in the first column and its
    tag in the last (columns between, as CoNLL-2003's part of speech and chunk, are ignored); columns are split by
    tabs when the line has one, else by spaces. A blank line between sentences; `-DOCSTART-` lines and comment
    lines are skipped. A line starting with `#` is a comment (`# sent_id = 1`, as in CoNLL-U) unless it reads as a
    token: a tag in its last column and no `=` column (`#5<TAB>O` is the token `#5`). Each sentence is one row,
    located at its first token's line."""
    tokens: list[str] = []
    tags: list[str] = []
    start, problem = 0, None
    for n, line in _text_lines(path):
        parts = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        if line.startswith("#") and not (len(parts) > 1 and "=" not in parts and ANY_TAG.match(parts[-1].strip())):
            continue  # a comment
        if not line.strip() or parts[0] == "-DOCSTART-":
            if tokens or problem:
                yield f"{path}:{start}", problem or {"tokens": tokens, "tags": tags}
            tokens, tags, problem = [], [], None
            continue
        start = start if tokens or problem else n
        if len(parts) < 2:
            problem = problem or DataError(f"{path}:{n}", "expected `token<TAB>tag` (or token and tag between spaces)")
            continue
        tokens.append(parts[0])
        tags.append(parts[-1].strip())
    if tokens or problem:
        yield f"{path}:{start}", problem or {"tokens": tokens, "tags": tags}


def read_hub_source(data: Any, key: str) -> Source:
    """The named splits (or `hub_split` as train) of a Hugging Face hub dataset at `revision`, or of a local folder
    in the same layout (`hub_id` a folder). A hub dataset is fetched as a snapshot, whose folder name is its commit.
    A dataset or split that cannot be loaded is a ConfigError on `key.hub_id` or the split's key."""
    import datasets

    folder, commit = _hub_folder(data, key)
    wanted = dict(data.splits) or {"train": data.hub_split}
    splits, tag_names = {}, None
    for name, split in wanted.items():
        split_key = f"{key}.splits.{name}" if data.splits else f"{key}.hub_split"
        try:
            ds = datasets.load_dataset(folder, split=split)
        except ValueError as err:
            if "Unknown split" not in str(err):
                raise
            raise ConfigError(split_key, f"{data.hub_id}: {err}") from None
        tag_names = tag_names or _class_label_names(ds, data.columns.get("tags"))
        where = f"{source_name(data)} [{split}]" if data.splits else source_name(data)
        splits[name] = [(f"{where} (record {i})", row) for i, row in enumerate(ds, start=1)]
    return Source(splits, commit, tag_names)


def _hub_folder(data: Any, key: str) -> tuple[str, str | None]:
    """A local folder holding the dataset's files, and the hub commit they are from (None for a local folder)."""
    if Path(data.hub_id).is_dir():
        return data.hub_id, None
    from huggingface_hub import snapshot_download

    try:
        with hub.online():
            folder = snapshot_download(data.hub_id, repo_type="dataset", revision=data.revision)
    except (OSError, ValueError) as err:  # offline, unreachable, no such dataset or revision; not a hub id or folder
        raise ConfigError(
            f"{key}.hub_id",
            f"cannot load {source_name(data)} ({type(err).__name__}: {' '.join(str(err).split())}). "
            f"If it is a hub dataset, check the id and run `hf download --repo-type dataset {data.hub_id}` once on a "
            "machine with internet (the cache is then used offline with HF_HUB_OFFLINE=1); "
            f"or point {key}.hub_id at a local folder with its files.",
        ) from None
    return folder, Path(folder).name


def _class_label_names(ds: Any, tags_column: str | None) -> list[str] | None:
    """The names of integer tags, where the dataset declares them (a sequence of ClassLabel, as `ner_tags`)."""
    feature = getattr(ds.features.get(tags_column), "feature", None) if tags_column else None
    return list(feature.names) if hasattr(feature, "names") else None


def normalise_text(text: str) -> str:
    """Unicode NFC and single spaces: the text we train on (line breaks inside a field are kept)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return "\n".join(lines).strip()


def normalise_key(text: str) -> str:
    """Case-, punctuation- and space-insensitive form used to detect duplicates and split leakage."""
    return " ".join(re.sub(r"[^\w\s]", " ", unicodedata.normalize("NFKC", text).lower()).split())


def to_task_records(
    rows: list[Row], task: Any, source_tag_names: list[str] | None = None
) -> tuple[list[dict], list[str]]:
    """Prepared records for a task config, by its kind (`sft` or `token_classification`). Integer tags are named
    by `data.tag_names`, else by `source_tag_names` (what a hub dataset declares)."""
    data = task.data
    if task.kind == "token_classification":
        tag_names = list(data.tag_names) if data.tag_names else source_tag_names
        return to_token_records(
            rows,
            dict(data.columns),
            data.id_column,
            data.on_invalid,
            list(task.labels),
            tag_names,
            task.orphan_inside,
            data.tag_scheme,
        )
    return to_sft_records(rows, dict(data.columns), data.id_column, data.on_invalid)


def to_sft_records(
    rows: list[Row], columns: dict[str, str], id_column: str | None, on_invalid: str
) -> tuple[list[dict], list[str]]:
    """Map source columns (checked by `check_task`) to `{"id", "prompt", "response"}` records (see `to_records`).

    With `columns: {messages: <column>}` each row holds a chat instead (`chat_fields`), and its record may also
    have `system` and `history`; records of the prompt/response layout never do.
    """
    if "messages" in columns:

        def fields(where: str, row: dict) -> dict:
            return chat_fields(where, _column(where, row, columns["messages"], "messages"), columns["messages"])

    else:

        def fields(where: str, row: dict) -> dict:
            return {field: _text_field(where, row, column, field) for field, column in columns.items()}

    return to_records(rows, fields, id_column, on_invalid)


def chat_fields(where: str, turns: Any, column: str = "messages") -> dict:
    """`{"prompt", "response"}` (and `system`, `history` when there are any) of one chat: a list of
    `{"role": "system" | "user" | "assistant", "content"}` turns (OpenAI), or of `{"from": "system" | "human" |
    "gpt", "value"}` turns (ShareGPT). The last turn is the assistant's response; the user turn right before it is
    the prompt; a first system turn is the record's system prompt (it replaces the task's); the turns between are
    the history, `[{"role", "content"}]`. Contents are normalised like every text field."""
    if not isinstance(turns, list):
        raise DataError(where, f'column "{column}" must be a list of turns, got {type(turns).__name__}')
    chat: list[dict[str, str]] = []
    for k, turn in enumerate(turns, start=1):
        keys = ("role", "content") if isinstance(turn, dict) and "role" in turn else ("from", "value")
        if not isinstance(turn, dict) or not all(key in turn for key in keys):
            raise DataError(where, f"turn {k}: expected an object with role and content (or from and value)")
        role, content = turn[keys[0]], turn[keys[1]]
        if role not in CHAT_ROLES:
            raise DataError(where, f"turn {k}: unknown role {role!r} (use {', '.join(CHAT_ROLES)})")
        if not isinstance(content, str):
            raise DataError(where, f"turn {k}: content must be text, got {type(content).__name__}")
        if not normalise_text(content):
            raise DataError(where, f"turn {k}: empty content")
        if CHAT_ROLES[role] == "system" and k > 1:
            raise DataError(where, f"turn {k}: a system turn must be the first turn")
        chat.append({"role": CHAT_ROLES[role], "content": normalise_text(content)})
    if not any(turn["role"] == "assistant" for turn in chat):
        raise DataError(where, "no assistant turn: the last turn must be the assistant's response")
    if chat[-1]["role"] != "assistant":
        raise DataError(where, f"the last turn is {chat[-1]['role']}, not assistant: it must be the response")
    if len(chat) < 2 or chat[-2]["role"] != "user":
        raise DataError(where, f"no user turn right before the last assistant turn (turn {len(chat)})")
    system = chat.pop(0)["content"] if chat[0]["role"] == "system" else None
    fields = {"prompt": chat[-2]["content"], "response": chat[-1]["content"]}
    if system is not None:
        fields["system"] = system
    if chat[:-2]:
        fields["history"] = chat[:-2]
    return fields


def to_records(
    rows: list[Row], fields: Callable[[str, dict], dict], id_column: str | None, on_invalid: str
) -> tuple[list[dict], list[str]]:
    """`{"id", **fields(where, row)}` for every row.

    With `on_invalid="error"` the first bad record raises DataError; with `"drop"` bad records are skipped
    and their problems returned (for stats.json). Raises DataError when no valid record is left.
    """
    records, problems, seen_ids = [], [], set()
    for n, (where, row) in enumerate(rows, start=1):
        try:
            if isinstance(row, DataError):
                raise row
            if not isinstance(row, dict):
                raise DataError(where, f"expected an object with fields, got {type(row).__name__}")
            record = {"id": _record_id(where, row, id_column, n), **fields(where, row)}
            if record["id"] in seen_ids:
                raise DataError(where, f"duplicate id {record['id']!r}")
        except DataError as err:
            if on_invalid == "error":
                raise
            problems.append(str(err))
            continue
        seen_ids.add(record["id"])
        records.append(record)
    if not records:
        first = f"; first problem: {problems[0]}" if problems else ""
        raise DataError(rows[0][0].split(":")[0] if rows else "dataset", f"no valid records{first}")
    return records, problems


def _column(where: str, row: dict, column: str, field: str) -> Any:
    if column not in row:
        raise DataError(where, f'column "{column}" (mapped to {field}) not found; fields present: {", ".join(row)}')
    return row[column]


def _text_field(where: str, row: dict, column: str, field: str) -> str:
    value = _column(where, row, column, field)
    if not isinstance(value, str):
        raise DataError(where, f'field "{column}" must be text, got {type(value).__name__}')
    value = normalise_text(value)
    if not value:
        raise DataError(where, f'field "{column}" is empty')
    return value


def _record_id(where: str, row: dict, id_column: str | None, n: int) -> str:
    if id_column is None:
        return f"row-{n:06d}"
    value = row.get(id_column)
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise DataError(where, f'id field "{id_column}" is missing or empty')
    return str(value).strip()


def record_text(record: dict) -> str:
    """The input text of a prepared record (prompt, or the sentence of a tagged record): the leakage key.
    A chat record's is its history and prompt, joined."""
    if "prompt" not in record:
        return " ".join(record["tokens"])
    return " ".join([turn["content"] for turn in record.get("history", ())] + [record["prompt"]])


def field_text(value: str | list) -> str:
    """One field of a prepared record as text, to compare records by: a text as it is, tokens or tags joined by
    spaces, a chat's history as its `role: content` turns."""
    if isinstance(value, str):
        return value
    return " ".join(item if isinstance(item, str) else f"{item['role']}: {item['content']}" for item in value)


def drop_duplicates(records: list[dict]) -> tuple[list[dict], int]:
    """Keep the first of records whose fields (all but the id) are identical after normalisation."""
    seen, kept = set(), []
    for record in records:
        key = tuple(normalise_key(field_text(v)) for k, v in record.items() if k != "id")
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept, len(records) - len(kept)


def name_ids_by_split(records: list[dict], split: str) -> list[dict]:
    """Ids made from the record number (`row-000001`, no `id_column`) start again in each split a task names:
    `test-000001`."""
    return [{**r, "id": f"{split}-{r['id'].removeprefix('row-')}"} for r in records]


def split_plan(task: Any) -> dict[str, str]:
    """Where each split comes from, for stats.json and the model card: given by the dataset, or carved from train."""
    data, carved = task.data, carved_shares(task)
    given = dict(data.splits) or {"train": data.hub_split if data.source == "hub" else data.path}
    plan = {}
    for name in SPLITS:
        if name in carved:
            plan[name] = f"carved from train by seed ({carved[name]:.0%})"
        else:
            files = ", ".join(split_files(given[name]))
            plan[name] = f"given: {'hub split ' if data.source == 'hub' else ''}{files}"
    return plan


def sample_records(records: list[dict], max_records: int | None, seed: int) -> list[dict]:
    """A seeded random subset of `max_records` records, in their original order."""
    if max_records is None or max_records >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), max_records))
    return [records[i] for i in keep]


def split_records(records: list[dict], shares: dict[str, float], seed: int, source: str) -> dict[str, list[dict]]:
    """Carve the splits in `shares` (validation and/or test: share of the records) from the records read from
    `source` (named in errors), deterministically by seed; the rest is train.

    Records whose input text (`record_text`) is the same after `normalise_key` stay in one split (no leakage).
    Every split is needed (training evaluates on validation, the evaluate stage reports on test): `check_task`
    refuses a share outside (0, 1), and a split that would be empty with so few records is a DataError.
    """
    if not shares:  # the task names its validation and test splits: train stays as given
        return {"train": records}
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(normalise_key(record_text(record)), []).append(record)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    targets = {name: round(len(records) * share) for name, share in shares.items()}
    splits: dict[str, list[dict]] = {name: [] for name in ("train", *shares)}
    for key in keys:
        name = next((s for s in ("test", "validation") if s in targets and len(splits[s]) < targets[s]), "train")
        splits[name].extend(groups[key])
    for name, split in splits.items():
        if not split:
            share = "lower the validation and test shares" if name == "train" else f"raise the {name} share"
            raise DataError(
                source, f"the {name} split is empty with only {len(records)} records: add records or {share}"
            )
    return splits


def count_leakage(splits: dict[str, list[dict]]) -> dict[str, int]:
    """How many records of each later split share their input text with an earlier one (`train~test`: test
    records whose text is also in train), for splits a dataset names itself: those are never altered, only counted."""
    order = [name for name in SPLITS if name in splits]
    seen = {name: {normalise_key(record_text(r)) for r in splits[name]} for name in order}
    counts = {}
    for i, later in enumerate(order):
        for earlier in order[:i]:
            n = sum(normalise_key(record_text(r)) in seen[earlier] for r in splits[later])
            if n:
                counts[f"{earlier}~{later}"] = n
    return counts


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation marks of `text` with their character offsets: how raw text becomes NER tokens."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def to_token_records(
    rows: list[Row],
    columns: dict[str, str],
    id_column: str | None,
    on_invalid: str,
    labels: list[str],
    tag_names: list[str] | None = None,
    orphan_inside: str = "error",
    tag_scheme: str = "iob2",
) -> tuple[list[dict], list[str]]:
    """Map rows to IOB2-tagged `{"id", "tokens", "tags"}` records (see `to_records` for errors).

    `columns` maps either `tokens` and `tags` (tags as strings, or integers naming `tag_names[i]`, the layout of
    Hugging Face `ner_tags`), or `text` and `entities` (a list of `{"word", "entity"}` found in the text).
    `orphan_inside`: "error" rejects an `I-X` that does not follow `B-X`/`I-X`; "repair" turns it into `B-X`.
    `tag_scheme` ("iob2" or "iobes") is the scheme of the `tags` column; iobes tags are read as IOB2 (`to_iob2`).
    """
    if {"tokens", "tags"} <= columns.keys():

        def fields(where: str, row: dict) -> dict:
            tokens, tags = _tokens_and_tags(where, row, columns, tag_names)
            tags = to_iob2(where, tags, tag_scheme, labels)
            return {"tokens": tokens, "tags": check_iob2(where, tags, labels, orphan_inside)}

    else:  # text and entities (check_task)

        def fields(where: str, row: dict) -> dict:
            text = _text_field(where, row, columns["text"], "text")
            entities = _column(where, row, columns["entities"], "entities")
            return tag_entities(where, text, entities, labels)

    return to_records(rows, fields, id_column, on_invalid)


def _tokens_and_tags(where: str, row: dict, columns: dict, tag_names: list[str] | None) -> tuple[list, list]:
    tokens, tags = _column(where, row, columns["tokens"], "tokens"), _column(where, row, columns["tags"], "tags")
    if not isinstance(tokens, list) or not isinstance(tags, list):
        raise DataError(where, "tokens and tags must be lists")
    if not tokens:
        raise DataError(where, "empty sentence (no tokens)")
    if len(tokens) != len(tags):
        raise DataError(where, f"{len(tokens)} tokens but {len(tags)} tags")
    for i, token in enumerate(tokens, start=1):
        if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token):
            raise DataError(where, f"token {i} ({token!r}) must be a non-empty string without spaces")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in tags):
        if not tag_names:
            raise DataError(where, "tags are integers: set tasks.<task>.data.tag_names to the dataset's label list")
        wrong = next((t for t in tags if not 0 <= t < len(tag_names)), None)
        if wrong is not None:
            raise DataError(where, f"tag ids must be in 0..{len(tag_names) - 1}, got {wrong}")
        tags = [tag_names[t] for t in tags]
    return tokens, tags


def to_iob2(where: str, tags: list, tag_scheme: str, labels: list[str]) -> list:
    """Tags in `tag_scheme` as IOB2, for `check_iob2` to check next. iobes (also called BIOES): S-X (a one-token
    entity) becomes B-X, E-X (its last token) I-X, and B-, I-, O stay. With iob2, an S- or E- tag is refused with
    the setting that reads it."""
    if tag_scheme == "iob2":
        i, tag = next(((i, t) for i, t in enumerate(tags, start=1) if not IOB2_TAG.match(str(t))), (0, None))
        if isinstance(tag, str) and IOBES_TAG.match(tag):  # the first tag that is not IOB2 is IOBES
            raise DataError(
                where, f"token {i}: {tag!r} is an IOBES tag, not IOB2: set tasks.<task>.data.tag_scheme: iobes"
            )
        return tags
    converted = []
    for i, tag in enumerate(tags, start=1):
        if not isinstance(tag, str) or not IOBES_TAG.match(tag):
            raise DataError(where, f"token {i}: malformed tag {tag!r} (expected O, B-, I-, E- or S-<Type>: iobes)")
        iob2 = {"S": "B", "E": "I"}.get(tag[0], tag[0]) + tag[1:]
        if iob2 not in labels:
            raise DataError(
                where, f"token {i}: unknown tag {tag!r} ({iob2} in IOB2; the task's labels: {', '.join(labels)})"
            )
        converted.append(iob2)
    return converted


def check_iob2(where: str, tags: list, labels: list[str], orphan_inside: str) -> list[str]:
    """Validate IOB2 tags against the task's label list; repair orphan `I-X` to `B-X` when asked."""
    checked: list[str] = []
    for i, tag in enumerate(tags, start=1):
        if not isinstance(tag, str) or not IOB2_TAG.match(tag):
            raise DataError(where, f"token {i}: malformed tag {tag!r} (expected O, B-<Type> or I-<Type>)")
        if tag not in labels:
            raise DataError(where, f"token {i}: unknown tag {tag!r} (the task's labels: {', '.join(labels)})")
        if tag.startswith("I-") and (not checked or checked[-1][2:] != tag[2:]):
            if orphan_inside == "error":
                raise DataError(
                    where,
                    f"token {i}: {tag} does not follow B-{tag[2:]} or {tag} "
                    "(set tasks.<task>.orphan_inside=repair to read it as B-)",
                )
            tag = "B-" + tag[2:]
        checked.append(tag)
    return checked


def tag_entities(where: str, text: str, entities: Any, labels: list[str]) -> dict:
    """IOB2 tokens and tags from a text and its `[{"word": "type 2 diabetes", "entity": "DISEASE"}, ...]`."""
    tokens = [w for w, _, _ in split_words(text)]
    tags = ["O"] * len(tokens)
    types = {label[2:].lower(): label[2:] for label in labels if label != "O"}
    if not isinstance(entities, list):
        raise DataError(where, "entities must be a list of {word, entity} objects")
    for k, entity in enumerate(entities, start=1):
        if not isinstance(entity, dict) or not isinstance(entity.get("word"), str) or "entity" not in entity:
            raise DataError(where, f"entity {k}: expected an object with text fields word and entity")
        type_ = types.get(str(entity["entity"]).lower())
        if type_ is None:
            raise DataError(
                where, f"entity {k}: unknown type {entity['entity']!r} (known: {', '.join(types.values())})"
            )
        words = [w.lower() for w, _, _ in split_words(entity["word"])]
        start = next(
            (
                i
                for i in range(len(tokens) - len(words) + 1)
                if [t.lower() for t in tokens[i : i + len(words)]] == words and set(tags[i : i + len(words)]) == {"O"}
            ),
            None,
        )
        if not words or start is None:
            raise DataError(where, f"entity {k}: {entity['word']!r} is not in the text (or overlaps another entity)")
        tags[start : start + len(words)] = [f"B-{type_}"] + [f"I-{type_}"] * (len(words) - 1)
    return {"tokens": tokens, "tags": tags}
