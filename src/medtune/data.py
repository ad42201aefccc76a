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
from pathlib import Path
from typing import Any

from medtune import hub
from medtune.errors import ConfigError, DataError

Row = tuple[str, Any]  # (where: "file:line" or "file (record N)", the row as read, or a DataError if unparseable)
SPLITS = ("train", "validation", "test")
SFT_FIELDS = ("prompt", "response")
TOKEN_LAYOUTS = ({"tokens", "tags"}, {"text", "entities"})  # the two column layouts of token_classification data
SOURCES = ("local", "hub")
ON_INVALID = ("error", "drop")  # a bad record stops prepare, or is skipped and counted
ORPHAN_INSIDE = ("error", "repair")  # an I-X without B-X before it is refused, or read as B-X
IOB2_TAG = re.compile(r"^(O|[BI]-[A-Za-z][\w-]*)$")
WORD = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]")  # words (with inner - ' .) and single punctuation marks
SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can escape half of a UTF-16 pair (\\ud800); UTF-8 cannot hold it


def check_task(task: Any, key: str) -> None:
    """Refuse data settings of a task (`key`: its config key, `tasks.<name>`) that no dataset could satisfy.

    `config.validate` calls this when params are read, so a wrong value fails before any stage runs and the
    error names the task's own key; the functions below take a checked task and do not check again.
    """
    data = task.data
    _check_choice(f"{key}.data.source", data.source, SOURCES)
    if data.source == "local" and not data.path:
        raise ConfigError(f"{key}.data.path", "is empty; set it to a .jsonl, .json, .csv, .parquet or .conll file")
    if data.source == "hub" and not data.hub_id:
        raise ConfigError(f"{key}.data.hub_id", "is empty; set the dataset id, e.g. keivalya/MedQuad-MedicalQnADataset")
    _check_choice(f"{key}.data.on_invalid", data.on_invalid, ON_INVALID)
    for name in ("validation", "test"):  # training evaluates on validation, the evaluate stage reports on test
        share = task.split[name]
        if not 0 < share < 1:
            raise ConfigError(f"{key}.split.{name}", f"must be a share above 0 and below 1 (e.g. 0.1), not {share}")
    if task.split.validation + task.split.test >= 1:
        shares = f"validation={task.split.validation} and test={task.split.test}"
        raise ConfigError(f"{key}.split", f"{shares} leave no train split: their sum must be below 1")
    if task.kind == "sft":
        missing = [f for f in SFT_FIELDS if f not in data.columns]
        if missing:
            raise ConfigError(f"{key}.data.columns", f"must map {', '.join(missing)} to a source column")
        return
    if not any(layout <= data.columns.keys() for layout in TOKEN_LAYOUTS):
        raise ConfigError(f"{key}.data.columns", "must map `tokens` and `tags`, or `text` and `entities`")
    _check_choice(f"{key}.orphan_inside", task.orphan_inside, ORPHAN_INSIDE)
    _check_labels(list(task.labels), f"{key}.labels")


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


def read_rows(data: Any, key: str) -> list[Row]:
    """Read every row of a task's checked data source (`data`; `key` is its config key, `tasks.<name>.data`),
    each tagged with where it came from."""
    if data.source == "hub":
        return read_hub_rows(data, key)
    rows = list(read_local_rows(Path(data.path)))
    if not rows:
        raise DataError(data.path, "has no records")
    return rows


def read_local_rows(path: Path) -> Iterator[Row]:
    """Rows of a local JSONL/JSON/CSV/Parquet/CoNLL file; a file that cannot be parsed raises DataError."""
    if not path.is_file():
        raise DataError(str(path), "file not found")
    readers = {
        ".jsonl": _jsonl_rows,
        ".json": _json_rows,
        ".csv": _csv_rows,
        ".parquet": _parquet_rows,
        ".conll": _conll_rows,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(str(path), f"unsupported file type {path.suffix!r}; use one of {', '.join(readers)}")
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
    """CoNLL: `token<TAB>tag` per line (other columns between are ignored), a blank line between sentences,
    `-DOCSTART-` lines skipped. Each sentence is one row, located at its first line."""
    tokens: list[str] = []
    tags: list[str] = []
    start, problem = 0, None
    for n, line in _text_lines(path):
        parts = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        if not line.strip() or parts[0] == "-DOCSTART-":
            if tokens or problem:
                yield f"{path}:{start}", problem or {"tokens": tokens, "tags": tags}
            tokens, tags, problem = [], [], None
            continue
        start = start if tokens or problem else n
        if len(parts) < 2:
            problem = problem or DataError(f"{path}:{n}", "expected `token<TAB>tag`")
            continue
        tokens.append(parts[0])
        tags.append(parts[-1].strip())
    if tokens or problem:
        yield f"{path}:{start}", problem or {"tokens": tokens, "tags": tags}


def read_hub_rows(data: Any, key: str) -> list[Row]:
    """Rows of a Hugging Face hub dataset (or a local folder in the same layout), by id and revision.
    A dataset that cannot be loaded is a ConfigError on `key.hub_id` (`key`: the task's `data` config key)."""
    import datasets

    hub_id, name = data.hub_id, source_name(data)
    try:
        with hub.online():
            ds = datasets.load_dataset(hub_id, revision=data.revision, split=data.hub_split)
    except OSError as err:  # offline, unreachable, no such dataset or revision, no such folder: all are OSErrors
        raise ConfigError(
            f"{key}.hub_id",
            f"cannot load {name} ({type(err).__name__}: {' '.join(str(err).split())}). "
            f"If it is a hub dataset, check the id and run `hf download --repo-type dataset {hub_id}` once on a "
            "machine with internet (the cache is then used offline with HF_HUB_OFFLINE=1); "
            f"or point {key}.hub_id at a local folder with its files.",
        ) from None
    except ValueError as err:
        if "Unknown split" not in str(err):
            raise
        raise ConfigError(f"{key}.hub_split", f"{hub_id}: {err}") from None
    return [(f"{name} (record {i})", row) for i, row in enumerate(ds, start=1)]


def normalise_text(text: str) -> str:
    """Unicode NFC and single spaces: the text we train on (line breaks inside a field are kept)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return "\n".join(lines).strip()


def normalise_key(text: str) -> str:
    """Case-, punctuation- and space-insensitive form used to detect duplicates and split leakage."""
    return " ".join(re.sub(r"[^\w\s]", " ", unicodedata.normalize("NFKC", text).lower()).split())


def to_task_records(rows: list[Row], task: Any) -> tuple[list[dict], list[str]]:
    """Prepared records for a task config, by its kind (`sft` or `token_classification`)."""
    data = task.data
    if task.kind == "token_classification":
        tag_names = list(data.tag_names) if data.tag_names else None
        return to_token_records(
            rows, dict(data.columns), data.id_column, data.on_invalid, list(task.labels), tag_names, task.orphan_inside
        )
    return to_sft_records(rows, dict(data.columns), data.id_column, data.on_invalid)


def to_sft_records(
    rows: list[Row], columns: dict[str, str], id_column: str | None, on_invalid: str
) -> tuple[list[dict], list[str]]:
    """Map source columns (checked by `check_task`) to `{"id", "prompt", "response"}` records (see `to_records`)."""

    def fields(where: str, row: dict) -> dict:
        return {field: _text_field(where, row, column, field) for field, column in columns.items()}

    return to_records(rows, fields, id_column, on_invalid)


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
    """The input text of a prepared record (prompt, or the sentence of a tagged record): the leakage key."""
    return record["prompt"] if "prompt" in record else " ".join(record["tokens"])


def drop_duplicates(records: list[dict]) -> tuple[list[dict], int]:
    """Keep the first of records whose fields (all but the id) are identical after normalisation."""
    seen, kept = set(), []
    for record in records:
        key = tuple(normalise_key(v if isinstance(v, str) else " ".join(v)) for k, v in record.items() if k != "id")
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


def split_records(records: list[dict], validation: float, test: float, seed: int, source: str) -> dict[str, list[dict]]:
    """Deterministic train/validation/test split by seed of the records read from `source` (named in errors).

    Records whose input text (`record_text`) is the same after `normalise_key` stay in one split (no leakage).
    Every split is needed (training evaluates on validation, the evaluate stage reports on test): `check_task`
    refuses a share outside (0, 1), and a split that would be empty with so few records is a DataError.
    """
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(normalise_key(record_text(record)), []).append(record)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    targets = {"test": round(len(records) * test), "validation": round(len(records) * validation)}
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for key in keys:
        name = next((s for s in ("test", "validation") if len(splits[s]) < targets[s]), "train")
        splits[name].extend(groups[key])
    for name in SPLITS:
        if not splits[name]:
            share = "lower the validation and test shares" if name == "train" else f"raise the {name} share"
            raise DataError(
                source, f"the {name} split is empty with only {len(records)} records: add records or {share}"
            )
    check_no_leakage(splits)
    return splits


def check_no_leakage(splits: dict[str, list[dict]]) -> None:
    """Raise DataError when the same normalised input text occurs in two splits."""
    owner: dict[str, str] = {}
    for name, records in splits.items():
        for record in records:
            key = normalise_key(record_text(record))
            if owner.setdefault(key, name) != name:
                raise DataError(
                    f"record {record['id']}",
                    f"its text also occurs in the {owner[key]} split (leakage between {owner[key]} and {name})",
                )


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
) -> tuple[list[dict], list[str]]:
    """Map rows to IOB2-tagged `{"id", "tokens", "tags"}` records (see `to_records` for errors).

    `columns` maps either `tokens` and `tags` (tags as strings, or integers naming `tag_names[i]`, the layout of
    Hugging Face `ner_tags`), or `text` and `entities` (a list of `{"word", "entity"}` found in the text).
    `orphan_inside`: "error" rejects an `I-X` that does not follow `B-X`/`I-X`; "repair" turns it into `B-X`.
    """
    if {"tokens", "tags"} <= columns.keys():

        def fields(where: str, row: dict) -> dict:
            tokens, tags = _tokens_and_tags(where, row, columns, tag_names)
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
