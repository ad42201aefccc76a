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
from pathlib import Path
from typing import Any

from medtune import hub
from medtune.config import IOB2_TAG, SPLITS, DataConfig, TaskConfig, carved_shares, split_files
from medtune.errors import ConfigError, DataError

Row = tuple[str, Any]  # (where: "file:line" or "file (record N)", the row as read, or a DataError if unparseable)
IOBES_TAG = re.compile(r"^(O|[BIES]-[A-Za-z][\w-]*)$")
ANY_TAG = re.compile(r"^(O|[A-Z]-\S+)$")  # what a CoNLL tag column looks like, in any scheme
CONLL_SUFFIXES = (".conll", ".tsv", ".txt", ".iob", ".bio")  # all read as CoNLL
CHAT_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}
WORD = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]")  # words (with inner - ' .) and single punctuation marks
SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can escape half of a UTF-16 pair (\\ud800); UTF-8 cannot hold it


def source_name(data: DataConfig) -> str:
    """How logs, stats.json and errors name a task's data: the local path, or `hub_id@revision`."""
    return data.path if data.source == "local" else f"{data.hub_id}@{data.revision or 'main'}"


@dataclass
class Source:
    """What a task's data source gave: the rows of each split it names (train alone when it names none)."""

    splits: dict[str, list[Row]]
    commit: str | None = None  # a hub dataset's resolved commit: what to pin `revision` to
    tag_names: list[str] | None = None  # a hub dataset's names of integer tags (its ClassLabel feature)


def read_source(data: DataConfig, key: str) -> Source:
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


def read_hub_source(data: DataConfig, key: str) -> Source:
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


def _hub_folder(data: DataConfig, key: str) -> tuple[str, str | None]:
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
    rows: list[Row], task: TaskConfig, source_tag_names: list[str] | None = None
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
            return {field: text_field(where, row, column, field) for field, column in columns.items()}

    return to_records(rows, fields, id_column, on_invalid)


PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")  # TRL's standard preference format, with an optional system


def to_preference_records(rows: list[Row], id_column: str | None, on_invalid: str) -> tuple[list[dict], list[str]]:
    """`{"id", "prompt", "chosen", "rejected"}` (and `system` when a row has one) for preference tuning, each a
    non-empty text; a pair whose two answers are the same text teaches nothing and is a bad record."""

    def fields(where: str, row: dict) -> dict:
        record = {field: text_field(where, row, field, field) for field in PREFERENCE_FIELDS}
        if record["chosen"] == record["rejected"]:
            raise DataError(where, "chosen and rejected are the same text")
        if row.get("system") is not None:
            record["system"] = text_field(where, row, "system", "system")
        return record

    return to_records(rows, fields, id_column, on_invalid)


PAIR_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # the file types given preference pairs may come in


def read_given_pairs(folder: Path, validation_share: float, seed: int) -> tuple[dict[str, list[dict]], dict]:
    """The user's preference pairs in `folder`: a `train.<ext>` file and, optionally, a `validation.<ext>` file
    (JSONL, JSON, CSV or Parquet rows `{"prompt", "chosen", "rejected"[, "system", "id"]}`). A validation file is kept
    as given; without one, `validation_share` of train is carved by seed, prompts never in both. Any bad row stops
    with its file and line. Returns the splits and their stats (where each came from, rows per split)."""
    files = {split: _split_file(folder, split) for split in ("train", "validation")}
    if files["train"] is None:
        kinds = ", ".join(f"train{suffix}" for suffix in PAIR_SUFFIXES)
        raise DataError(str(folder), f"no train file of preference pairs ({kinds}: see data/preference/README.md)")
    splits = {}
    for split, path in files.items():
        if path is not None:
            rows = read_file_rows(path)
            id_column = "id" if all(isinstance(row, dict) and "id" in row for _, row in rows) else None
            splits[split], _ = to_preference_records(rows, id_column, "error")
    if files["validation"] is None:
        splits = split_records(splits["train"], {"validation": validation_share}, seed, str(files["train"]))
    carved = f"carved from train ({validation_share:g})"
    stats = {
        split: {"file": str(path) if path else carved, "pairs": len(splits[split])} for split, path in files.items()
    }
    return splits, stats


def _split_file(folder: Path, split: str) -> Path | None:
    """The one `<split>.<ext>` file of `folder`, None when there is none; two of them are ambiguous."""
    found = [folder / f"{split}{suffix}" for suffix in PAIR_SUFFIXES if (folder / f"{split}{suffix}").is_file()]
    if len(found) > 1:
        raise DataError(str(folder), f"two {split} files ({', '.join(p.name for p in found)}): keep one")
    return found[0] if found else None


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


def text_field(where: str, row: dict, column: str, field: str) -> str:
    """The `column` of a row read as our `field`: non-empty text, normalised (`normalise_text`)."""
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


def split_plan(task: TaskConfig) -> dict[str, str]:
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
            text = text_field(where, row, columns["text"], "text")
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
