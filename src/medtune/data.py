"""Raw datasets -> validated, normalised, de-duplicated, leakage-free splits of prepared records.

Local files are read by our own small readers rather than `datasets.load_dataset`, because every bad
record must be reported as `file:line` (or `file (record N)`), which the generic loaders cannot do.
Hub datasets go through `datasets.load_dataset` by id and pinned revision.
This module knows no tokenizer and no model.
"""

from __future__ import annotations

import csv
import json
import random
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medtune.errors import ConfigError, DataError

Row = tuple[str, Any]  # (where: "file:line" or "file (record N)", the row as read, or a DataError if unparseable)
SPLITS = ("train", "validation", "test")
SFT_FIELDS = ("prompt", "response")


def read_rows(data: Any) -> list[Row]:
    """Read every row of the configured source (`task.data`), each tagged with where it came from."""
    if data.source == "local":
        if not data.path:
            raise ConfigError("task.data.path", "is empty; set it to a .jsonl, .json, .csv or .parquet file")
        return list(read_local_rows(Path(data.path)))
    if data.source == "hub":
        return read_hub_rows(data.hub_id, data.revision, data.hub_split)
    raise ConfigError("task.data.source", f"unknown source {data.source!r}; use 'local' or 'hub'")


def read_local_rows(path: Path) -> Iterator[Row]:
    """Rows of a local JSONL/JSON/CSV/Parquet file; a file that cannot be parsed raises DataError."""
    if not path.is_file():
        raise DataError(str(path), "file not found")
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(str(path), f"unsupported file type {path.suffix!r}; use one of {', '.join(readers)}")
    try:
        yield from reader(path)
    except UnicodeDecodeError as err:
        raise DataError(str(path), f"is not valid UTF-8 (byte {err.start})") from None


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{n}", json.loads(line)
            except json.JSONDecodeError as err:  # a bad record like any other: `on_invalid` decides
                yield f"{path}:{n}", DataError(f"{path}:{n}", f"not valid JSON ({err.msg} at column {err.colno})")


def _json_rows(path: Path) -> Iterator[Row]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}", f"not valid JSON ({err.msg})") from None
    if not isinstance(rows, list):
        raise DataError(str(path), "a .json dataset must be a list of objects")
    for i, row in enumerate(rows, start=1):
        yield f"{path} (record {i})", row


def _csv_rows(path: Path) -> Iterator[Row]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            # line_num is the last physical line read, so quoted multi-line fields still point at the record
            if None in row:
                raise DataError(f"{path}:{reader.line_num}", "more fields than the header has")
            yield f"{path}:{reader.line_num}", row


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
        yield f"{path} (record {i})", row


def read_hub_rows(hub_id: str | None, revision: str | None, split: str) -> list[Row]:
    """Rows of a Hugging Face hub dataset (or a local folder in the same layout), by id and revision."""
    import datasets

    if not hub_id:
        raise ConfigError("task.data.hub_id", "is empty; set the dataset id, e.g. keivalya/MedQuad-MedicalQnADataset")
    try:
        ds = datasets.load_dataset(hub_id, revision=revision, split=split)
    except ConnectionError as err:
        raise DataError(
            hub_id,
            f"cannot reach the Hugging Face hub ({err}). Download it once with "
            f"`hf download --repo-type dataset {hub_id}` on a machine with internet, "
            "or point task.data.hub_id at a local folder with its files.",
        ) from err
    return [(f"{hub_id}@{revision or 'main'} (record {i})", row) for i, row in enumerate(ds, start=1)]


def normalise_text(text: str) -> str:
    """Unicode NFC and single spaces: the text we train on (line breaks inside a field are kept)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return "\n".join(lines).strip()


def normalise_key(text: str) -> str:
    """Case-, punctuation- and space-insensitive form used to detect duplicates and split leakage."""
    return " ".join(re.sub(r"[^\w\s]", " ", unicodedata.normalize("NFKC", text).lower()).split())


def to_sft_records(
    rows: list[Row], columns: dict[str, str], id_column: str | None, on_invalid: str
) -> tuple[list[dict], list[str]]:
    """Map source columns to `{"id", "prompt", "response"}` records.

    With `on_invalid="error"` the first bad record raises DataError; with `"drop"` bad records are skipped
    and their problems returned (for stats.json). Raises DataError when no valid record is left.
    """
    if on_invalid not in ("error", "drop"):
        raise ConfigError("task.data.on_invalid", f"must be 'error' or 'drop', not {on_invalid!r}")
    missing = [f for f in SFT_FIELDS if f not in columns]
    if missing:
        raise ConfigError("task.data.columns", f"must map {', '.join(missing)} to a source column")
    records, problems, seen_ids = [], [], set()
    for n, (where, row) in enumerate(rows, start=1):
        try:
            record = _sft_record(where, row, columns, id_column, n)
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


def _sft_record(where: str, row: Any, columns: dict[str, str], id_column: str | None, n: int) -> dict:
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        raise DataError(where, f"expected an object with fields, got {type(row).__name__}")
    record = {"id": _record_id(where, row, id_column, n)}
    for field, column in columns.items():
        if column not in row:
            raise DataError(where, f'column "{column}" (mapped to {field}) not found; fields present: {", ".join(row)}')
        value = row[column]
        if not isinstance(value, str):
            raise DataError(where, f'field "{column}" must be text, got {type(value).__name__}')
        value = normalise_text(value)
        if not value:
            raise DataError(where, f'field "{column}" is empty')
        record[field] = value
    return record


def _record_id(where: str, row: dict, id_column: str | None, n: int) -> str:
    if id_column is None:
        return f"row-{n:06d}"
    value = row.get(id_column)
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise DataError(where, f'id field "{id_column}" is missing or empty')
    return str(value).strip()


def drop_duplicates(records: list[dict], fields: tuple[str, ...] = SFT_FIELDS) -> tuple[list[dict], int]:
    """Keep the first of records whose `fields` are identical after normalisation."""
    seen, kept = set(), []
    for record in records:
        key = tuple(normalise_key(record[f]) for f in fields)
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept, len(records) - len(kept)


def sample_records(records: list[dict], max_records: int | None, seed: int) -> list[dict]:
    """A seeded random subset of `max_records` records, in their original order."""
    if max_records is None or max_records >= len(records):
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), max_records))
    return [records[i] for i in keep]


def split_records(
    records: list[dict], validation: float, test: float, seed: int, key_field: str = "prompt"
) -> dict[str, list[dict]]:
    """Deterministic train/validation/test split by seed.

    Records whose `key_field` is the same after `normalise_key` are kept in one split (no leakage).
    Raises DataError when a split with a non-zero share would be empty.
    """
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise ConfigError("task.split", f"validation={validation} and test={test} must be in [0, 1) and sum below 1")
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(normalise_key(record[key_field]), []).append(record)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    targets = {"test": round(len(records) * test), "validation": round(len(records) * validation)}
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for key in keys:
        name = next((s for s in ("test", "validation") if len(splits[s]) < targets[s]), "train")
        splits[name].extend(groups[key])
    for name, share in (("train", 1 - validation - test), ("validation", validation), ("test", test)):
        if share > 0 and not splits[name]:
            raise DataError("task.split", f"the {name} split is empty with only {len(records)} records")
    check_no_leakage(splits, key_field)
    return splits


def check_no_leakage(splits: dict[str, list[dict]], key_field: str = "prompt") -> None:
    """Raise DataError when the same normalised `key_field` occurs in two splits."""
    owner: dict[str, str] = {}
    for name, records in splits.items():
        for record in records:
            key = normalise_key(record[key_field])
            if owner.setdefault(key, name) != name:
                raise DataError(
                    f"record {record['id']}",
                    f"{key_field} also occurs in the {owner[key]} split (leakage between {owner[key]} and {name})",
                )
