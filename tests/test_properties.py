"""Property-based tests: random and malformed files for every reader of user data, and for the config loader.

The only failure allowed is medtune's own DataError (naming the file, and the line or record when the problem is
in one) or ConfigError (naming the key). Any other exception (UnicodeDecodeError, csv.Error, a pyarrow error,
RecursionError, TypeError, ...) fails a property, and so does a reader that succeeds with records that are not
well formed. Each example writes its files to a fresh temporary folder: hypothesis runs many examples per test.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import io
import json
import re
import sys
import tempfile
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import ROOT, a_data, a_task
from medtune import data
from medtune.config import Params, TrainConfig, load_params, validate
from medtune.errors import ConfigError, DataError, MedtuneError
from medtune.predict import read_inputs
from medtune.scope import read_scope_questions
from medtune.training import interval_steps, steps_per_epoch
from stages import prepare


def examples(n: int) -> settings:
    # deadline=None: a 1 MB line or a Parquet round trip is slow for a test, but the point is what it raises
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


LABELS = ["O", "B-Disease", "I-Disease", "B-Symptom", "I-Symptom"]
HUGE = "x" * 1_000_000

# ---- random values: what a dataset file can hold --------------------------------------------------------------

# Text that trips naive readers: empty or blank, odd line breaks and spaces, NUL, a BOM, combining marks, lone
# surrogates (JSON can escape them as \ud800, UTF-8 cannot encode them), and a 1 MB string.
odd_text = st.one_of(
    st.sampled_from(["", " ", "\r\n", "\r", "\t", "\u2028", "\ufeff", "\x00", "e\u0301", "\ud800", "a\udfffb", HUGE]),
    st.text(max_size=12),
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zs", "Zl", "Zp"]), max_size=4),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), odd_text),  # floats include NaN and Infinity
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=6,
)
# r0, r1: the ids of well-formed records; lists and objects cannot even be compared as ids
ids = st.one_of(st.sampled_from(["r0", "r1", "", " ", 0, [1], {"id": 1}, None, 1.5, True]), json_values)
any_text = st.one_of(st.sampled_from(["Fever and cough.", "fever fever"]), odd_text, json_values)
TAGS = [*LABELS, "B-Drug", "b-symptom", "I-", "B-", "X", "", " O", "O ", 0, 1, 2, 9, -1, True, None, 1.5]
tokens = st.one_of(st.sampled_from(["Fever", "cough", ".", "a b", ""]), odd_text)

# Per record layout: a well-formed record number i, and the fields a malformed one may have (any of them missing).
LAYOUTS: dict[str, tuple[Callable[[int], dict], dict[str, st.SearchStrategy]]] = {
    "sft": (
        lambda i: {"id": f"r{i}", "question": f"Question {i}?", "answer": f"Answer {i}."},
        {"id": ids, "question": any_text, "answer": any_text},
    ),
    "tokens": (
        lambda i: {"id": f"r{i}", "tokens": ["Fever", "and", f"cough{i}", "."], "tags": ["B-Symptom", "O", "O", "O"]},
        {
            "id": ids,
            # well-formed lists of different lengths, tags out of order (orphan I-), and anything else
            "tokens": st.one_of(
                st.lists(st.sampled_from(["Fever", "cough", "."]), max_size=5),
                st.lists(st.one_of(tokens, json_values), max_size=5),
                json_values,
            ),
            "tags": st.one_of(
                st.lists(st.sampled_from(LABELS), max_size=5), st.lists(st.sampled_from(TAGS), max_size=5), json_values
            ),
        },
    ),
    "entities": (
        lambda i: {"id": f"r{i}", "text": f"Fever and cough {i}.", "labels": [{"word": "cough", "entity": "Symptom"}]},
        {
            "id": ids,
            "text": any_text,
            "labels": st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "word": st.one_of(st.sampled_from(["cough", "Fever", "fever fever", "flu", ""]), odd_text),
                            "entity": st.one_of(st.sampled_from(["Symptom", "symptom", "Drug"]), json_values),
                        },
                    ),
                    max_size=3,
                ),
                json_values,
            ),
        },
    ),
    "scope": (
        lambda i: {"id": f"r{i}", "text": f"Is fever {i} contagious?", "in_scope": i % 2 == 0},
        {"id": ids, "text": any_text, "in_scope": st.one_of(st.booleans(), json_values)},
    ),
    "predict": (lambda i: {"id": f"r{i}", "text": f"Fever {i}."}, {"id": ids, "text": any_text}),
}


@st.composite
def mixed_rows(draw: st.DrawFn, layout: str) -> list[Any]:
    """Well-formed records with up to two bad ones among them: a well-formed record with one field changed or
    missing (the near misses: a duplicate id, an empty text, one tag too many), or anything at all."""
    good, fields = LAYOUTS[layout]
    rows: list[Any] = [good(i) for i in range(draw(st.integers(0, 5) | st.just(12)))]
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            bad = good(100 + draw(st.integers(0, 3)))  # 100-103: twice the same record now and then
            field = draw(st.sampled_from([*fields, "extra"]))
            if draw(st.integers(0, 3)) == 0:
                bad.pop(field, None)
            else:
                bad[field] = draw(fields.get(field, json_values))
        else:
            bad = draw(st.one_of(st.fixed_dictionaries({}, optional={**fields, "extra": json_values}), json_values))
        rows.insert(draw(st.integers(0, len(rows))), bad)
    return rows


# ---- random files: each format written with every way a file can be broken ------------------------------------

# Lines Python's json accepts although JSON does not (NaN, Infinity, 1e999, a lone surrogate escape, an integer
# too long for Python to convert) or that its parser cannot take (nesting 100,000 deep); then plain junk.
NON_STANDARD_JSON = [
    '{"id": "x", "question": "Q?", "answer": "A.", "score": NaN}',
    '{"id": "x", "question": "Q?", "answer": "A.", "score": -Infinity}',
    '{"id": "x", "question": "Q?", "answer": "A.", "score": 1e999}',
    '{"id": "x", "question": "Q?", "answer": "A.", "note": "\\ud800"}',
    '{"id": "x", "question": "Q?", "answer": "A.", "\\udc00": 1}',
    '{"id": "x", "question": "Q?", "answer": "A.", "n": ' + "1" * 5000 + "}",
    "[" * 100_000 + "]" * 100_000,
]
JUNK_LINES = [
    *NON_STANDARD_JSON,
    "{not json",
    '"a string"',
    "null",
    "[]",
    "\ufeff{}",
    "\x00",
    '{"id": "big", "question": "' + HUGE + '", "answer": "A."}',
    HUGE,
]
STRAY_BYTES = [b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\r"]


@st.composite
def text_file(draw: st.DrawFn, lines: list[str]) -> bytes:
    """Lines joined by LF, CRLF or a lone CR, maybe after a BOM, maybe with a byte that is not UTF-8 (or a NUL)."""
    sep = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = ("\ufeff" if draw(st.booleans()) else "") + sep.join(lines) + draw(st.sampled_from(["", sep]))
    raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate written raw is not UTF-8 either
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from(STRAY_BYTES)) + raw[at:]
    return raw


def with_junk(draw: st.DrawFn, lines: list[str], junk: st.SearchStrategy[str]) -> list[str]:
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(junk))
    return lines


@st.composite
def jsonl_file(draw: st.DrawFn, layout: str) -> bytes:
    lines = [json.dumps(row, ensure_ascii=draw(st.booleans())) for row in draw(mixed_rows(layout))]
    junk = st.one_of(st.sampled_from(JUNK_LINES), st.text(max_size=20))
    return draw(text_file(with_junk(draw, lines, junk)))


@st.composite
def json_file(draw: st.DrawFn, layout: str) -> bytes:
    rows = draw(mixed_rows(layout))
    text = draw(
        st.one_of(
            st.just(json.dumps(rows, indent=draw(st.sampled_from([None, 2])), ensure_ascii=draw(st.booleans()))),
            json_values.map(json.dumps),  # valid JSON that is not a list of records
            st.sampled_from(JUNK_LINES),
            st.integers(0, 200).map(lambda n: json.dumps(rows)[:n]),  # cut short
        )
    )
    return draw(text_file(text.splitlines() or [""]))


def cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def csv_file(draw: st.DrawFn, layout: str) -> bytes:
    rows = draw(mixed_rows(layout))
    header = draw(st.sampled_from([["id", "question", "answer"]] * 3 + [["question", "answer"], ["id", "question"]]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = [cell(row.get(k, "")) for k in header] if isinstance(row, dict) else [cell(row)]
        writer.writerow(cells)
    junk = st.one_of(
        st.sampled_from(['a,"unclosed', '"x"y,z', ",,,,", "r9,Q?,A.,extra", "\x00", f'1,"{HUGE}",a']),
        st.text(max_size=20),
    )
    lines = out.getvalue().encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape").split("\n")
    return draw(text_file(with_junk(draw, lines, junk)))


def parquet_bytes(rows: list[dict]) -> bytes:
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue().to_pybytes()


@st.composite
def parquet_file(draw: st.DrawFn, layout: str) -> bytes:
    rows = [row for row in draw(mixed_rows(layout)) if isinstance(row, dict)]
    try:
        raw = parquet_bytes(rows)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):  # mixed types in a column: store them as text
        raw = parquet_bytes([{k: json.dumps(v) for k, v in row.items()} for row in rows])
    return draw(
        st.one_of(
            st.just(raw),
            st.integers(0, len(raw) - 1).map(lambda n: raw[:n]),  # cut short, down to an empty file
            st.binary(max_size=64),
            st.binary(max_size=16).map(lambda b: b"PAR1" + b + b"PAR1"),
        )
    )


@st.composite
def conll_file(draw: st.DrawFn, layout: str = "tokens") -> bytes:
    good = [f"Fever{i}\tB-Symptom\nand\tO\ncough\tB-Symptom\n" for i in range(draw(st.integers(0, 4)))]
    line = st.one_of(
        st.builds(
            lambda token, sep, tag: f"{token}{sep}{tag}",
            tokens,
            st.sampled_from(["\t", " ", "\tNN\t", "  "]),
            st.sampled_from([str(t) for t in TAGS]),
        ),
        st.sampled_from(["", "   ", "-DOCSTART- -X- O O", "-DOCSTART-", "lonely", "\t", "a\tb\tc", HUGE + "\tO"]),
        st.text(max_size=10),
    )
    lines = "\n".join(good).split("\n")
    return draw(text_file(with_junk(draw, lines, line)))


FILES = {"jsonl": jsonl_file, "json": json_file, "csv": csv_file, "parquet": parquet_file, "conll": conll_file}

# ---- checks -------------------------------------------------------------------------------------------------


def located(path: Path) -> re.Pattern:
    """`path:line` or `path (record N)`: where a problem in one record must be reported."""
    return re.compile(re.escape(str(path)) + r"(:\d+| \(record \d+\))")


def assert_names_file(err: DataError, path: Path) -> None:
    assert err.where.startswith(str(path)), f"the error does not name the file: {err}"


def assert_writable(value: Any) -> None:
    """What a reader returns can be written as strict JSON in UTF-8 (prepare writes JSONL, predict appends it)."""
    json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


def assert_well_formed(records: list[dict], kind: str, labels: list[str]) -> None:
    assert records, "a reader that succeeds returns at least one record"
    assert len({r["id"] for r in records}) == len(records), "ids are unique"
    for record in records:
        assert isinstance(record["id"], str) and record["id"].strip()
        if kind == "sft":
            assert set(record) == {"id", "prompt", "response"}
            for field in ("prompt", "response"):
                assert isinstance(record[field], str) and record[field].strip() == record[field] != ""
        else:
            assert set(record) == {"id", "tokens", "tags"}
            assert record["tokens"] and len(record["tokens"]) == len(record["tags"])
            assert all(isinstance(t, str) and t and not any(c.isspace() for c in t) for t in record["tokens"])
            assert all(tag in labels for tag in record["tags"])
            for before, tag in zip(["O", *record["tags"]], record["tags"], strict=False):
                assert not tag.startswith("I-") or before[2:] == tag[2:], f"orphan {tag} in {record['tags']}"
    assert_writable(records)


def task_for(path: Path, layout: str, on_invalid: str, id_column: str | None, orphan: str, tag_names) -> Any:
    columns = {
        "sft": {"prompt": "question", "response": "answer"},
        "tokens": {"tokens": "tokens", "tags": "tags"},
        "entities": {"text": "text", "entities": "labels"},
    }[layout]
    return a_task(
        kind="sft" if layout == "sft" else "token_classification",
        data=a_data(path=str(path), columns=columns, id_column=id_column, on_invalid=on_invalid, tag_names=tag_names),
        labels=LABELS,
        orphan_inside=orphan,
    )


# ---- readers of task data -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "layout"),
    [
        ("jsonl", "sft"),
        ("jsonl", "tokens"),
        ("jsonl", "entities"),
        ("json", "sft"),
        ("json", "tokens"),
        ("csv", "sft"),
        ("parquet", "sft"),
        ("parquet", "tokens"),
        ("conll", "tokens"),
    ],
)
@examples(30)
@given(
    st.data(),
    st.sampled_from(["error", "drop"]),
    st.sampled_from(["id", None]),
    st.sampled_from(["error", "repair"]),
    st.sampled_from([None, LABELS]),
)
def test_a_task_reader_returns_well_formed_records_or_a_located_data_error(
    fmt, layout, data_, on_invalid, id_column, orphan, tag_names
):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"dataset.{fmt}"
        path.write_bytes(data_.draw(FILES[fmt](layout), label="file"))
        if fmt == "conll":
            id_column = None
        task = task_for(path, layout, on_invalid, id_column, orphan, tag_names)
        try:
            rows = data.read_source(task.data, "tasks.qa.data").splits["train"]
        except DataError as err:  # the file as a whole: not UTF-8, not Parquet, not JSON, empty
            event("refused: the file")
            assert_names_file(err, path)
            return
        try:
            records, problems = data.to_task_records(rows, task)
        except DataError as err:
            event("refused: a record")
            assert_names_file(err, path)
            if on_invalid == "error":
                assert located(path).fullmatch(err.where), f"not located at a line or record: {err}"
            return
        event("read")
        assert_well_formed(records, task.kind, LABELS)
        assert all(located(path).match(problem) for problem in problems), problems


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
@pytest.mark.parametrize("line", NON_STANDARD_JSON, ids=range(len(NON_STANDARD_JSON)))
@examples(4)
@given(n=st.integers(0, 4), reader=st.sampled_from(["task", "scope", "predict"]))
def test_json_that_only_python_accepts_is_refused_at_its_line(fmt, line, n, reader):
    """NaN, Infinity, 1e999, lone surrogates, overlong integers and deep nesting, even in fields medtune ignores."""
    good = [
        json.dumps({"id": f"r{i}", "question": "Q?", "answer": "A.", "text": "T?", "in_scope": True}) for i in range(4)
    ]
    lines = [*good[:n], line, *good[n:]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"dataset.{fmt}"
        path.write_text("\n".join(lines) if fmt == "jsonl" else "[\n" + ",\n".join(lines) + "\n]", encoding="utf-8")
        read = {
            "task": lambda: data.to_sft_records(
                data.read_file_rows(path),
                {"prompt": "question", "response": "answer"},
                "id",
                "error",
            ),
            "scope": lambda: read_scope_questions(path),
            "predict": lambda: read_inputs(path),
        }[reader]
        with pytest.raises(DataError) as caught:
            read()
    where = caught.value.where
    assert "not valid JSON" in caught.value.problem
    if fmt == "jsonl":
        assert where == f"{path}:{n + 1}"
    elif line.startswith("{") and "1111" in line:  # an overlong integer stops the parser: the line of the number
        assert where == f"{path}:{n + 2}"
    elif line.startswith("{"):  # parsed, then refused: the record
        assert where == f"{path} (record {n + 1})"
    else:
        assert_names_file(caught.value, path)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "conll"])
@examples(25)
@given(data_=st.data(), stray=st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80"]))
def test_a_byte_that_is_not_utf8_text_anywhere_in_a_file_is_refused(fmt, data_, stray):
    """Invalid UTF-8, an encoded surrogate, or a NUL (UTF-16 or a binary file): never read as garbled records."""
    good = {
        "jsonl": "".join(json.dumps({"id": f"r{i}", "question": "Q?", "answer": f"A{i}."}) + "\n" for i in range(3)),
        "json": json.dumps([{"id": f"r{i}", "question": "Q?", "answer": f"A{i}."} for i in range(3)], indent=1),
        "csv": "id,question,answer\n" + "".join(f"r{i},Q?,A{i}.\n" for i in range(3)),
        "conll": "".join(f"Fever{i}\tB-Symptom\ncough\tO\n\n" for i in range(3)),
    }[fmt].encode()
    at_ = data_.draw(st.integers(0, len(good)), label="at")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"dataset.{fmt}"
        path.write_bytes(good[:at_] + stray + good[at_:])
        task = task_for(
            path, "tokens" if fmt == "conll" else "sft", "error", None if fmt == "conll" else "id", "error", None
        )
        with pytest.raises(DataError) as caught:
            data.to_task_records(data.read_source(task.data, "tasks.qa.data").splits["train"], task)
    assert_names_file(caught.value, path)


@examples(20)
@given(n=st.integers(0, 4), line=st.sampled_from([f'r9,"{HUGE}",A.', f"r9,{HUGE},A.", f'r9,"Q?\n{HUGE}",A.']))
def test_a_csv_field_over_the_size_limit_is_refused_at_the_line_its_record_starts(n, line):
    lines = ["id,question,answer", *(f"r{i},Q{i}?,A." for i in range(4))]
    lines.insert(n + 1, line)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dataset.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with pytest.raises(DataError) as caught:
            data.read_source(task_for(path, "sft", "error", "id", "error", None).data, "tasks.qa.data").splits["train"]
    assert caught.value.where == f"{path}:{n + 2}" and "not valid CSV" in caught.value.problem


# ---- one record at a time: the near misses each check is there for ------------------------------------------


# what a file reader can hand on: it refuses lone surrogates (test_json_that_only_python_accepts_is_refused_at_its_line)
read_text = odd_text.map(lambda text: data.SURROGATE.sub("", text))


def refused_at(where: str, read: Callable[[], Any]) -> Any:
    """What `read()` returns, or None when it raises a DataError located at `where`."""
    try:
        return read()
    except DataError as err:
        assert err.where == where, err
        return None


@st.composite
def tagged_sentence(draw: st.DrawFn) -> tuple[list, list, str]:
    """Tokens and known tags (an orphan I- now and then), with at most one thing changed, and what changed."""
    n = draw(st.integers(1, 5))
    tokens: list[Any] = draw(st.lists(st.sampled_from(["Fever", "cough", ".", "Aspirin"]), min_size=n, max_size=n))
    tags: list[Any] = draw(st.lists(st.sampled_from(LABELS), min_size=n, max_size=n))
    change, i = draw(st.sampled_from(["none", "tag", "token", "a tag more", "a tag less"])), draw(st.integers(0, n - 1))
    if change == "tag":
        unknown = st.sampled_from(["B-Drug", "I-Drug", "B-disease", "B-Symptoms"])
        tags[i] = draw(unknown | st.sampled_from(TAGS))  # unknown, malformed, an integer, not text
    elif change == "token":
        tokens[i] = draw(st.sampled_from(["a b", "", " ", "x\ty", "\u2028", 5, None]) | read_text)
    elif change == "a tag more":
        tags.append("O")
    elif change == "a tag less":
        tags.pop()
    return tokens, tags, change


def repaired(tags: list[str]) -> tuple[list[str], bool]:
    """IOB2 tags with each orphan `I-X` (not after `B-X` or `I-X`) read as `B-X`, and whether there was one."""
    fixed: list[str] = []
    for tag in tags:
        orphan = tag.startswith("I-") and (not fixed or fixed[-1][2:] != tag[2:])
        fixed.append("B-" + tag[2:] if orphan else tag)
    return fixed, fixed != tags


@examples(150)
@given(
    sentence=tagged_sentence(), orphan=st.sampled_from(["error", "repair"]), tag_names=st.sampled_from([None, LABELS])
)
def test_a_tagged_record_is_well_formed_or_refused_at_its_line(sentence, orphan, tag_names):
    """Tokens and tags of different lengths, unknown or malformed labels, an orphan I-, a token with a space."""
    tokens, tags, change = sentence
    rows = [("f.jsonl:7", {"id": "s1", "tokens": tokens, "tags": tags})]
    columns = {"tokens": "tokens", "tags": "tags"}
    read = refused_at(
        "f.jsonl:7", lambda: data.to_token_records(rows, columns, "id", "error", LABELS, tag_names, orphan)
    )
    if change == "none":  # well formed, but for orphans: refused, or repaired as asked
        fixed, had_orphan = repaired(tags)
        if had_orphan and orphan == "error":
            assert read is None, f"orphan I- accepted with orphan_inside=error: {tags}"
        else:
            assert read is not None and read[0] == [{"id": "s1", "tokens": tokens, "tags": fixed}], (tags, read)
    elif read is not None:
        assert_well_formed(read[0], "token_classification", LABELS)


qa_text = st.sampled_from(["What is gout?", "A form of arthritis."]) | read_text


@examples(100)
@given(
    texts=st.lists(st.tuples(st.sampled_from(["a", "b"]), qa_text, qa_text), min_size=1, max_size=4),
    id_column=st.sampled_from(["id", None]),
)
def test_question_answer_records_are_well_formed_or_refused_at_their_line(texts, id_column):
    """Duplicate ids, and texts that are empty once normalised (spaces, line breaks, a BOM are not text)."""
    rows = [(f"f.jsonl:{n}", {"id": i, "q": q, "a": a}) for n, (i, q, a) in enumerate(texts, start=1)]
    bad = first_bad_line(texts, id_column)
    try:
        records, _ = data.to_sft_records(rows, {"prompt": "q", "response": "a"}, id_column, "error")
    except DataError as err:
        assert err.where == f"f.jsonl:{bad}", err
        return
    assert bad is None, f"line {bad} accepted: {texts[bad - 1]}"
    assert_well_formed(records, "sft", [])


def first_bad_line(texts: list[tuple[str, str, str]], id_column: str | None) -> int | None:
    """The line of the first (id, question, answer) with a text of only white space or an id seen before."""
    seen = set()
    for n, (id_, question, answer) in enumerate(texts, start=1):
        if not question.split() or not answer.split() or (id_column and id_ in seen):
            return n
        seen.add(id_)
    return None


@examples(60)
@given(
    id_=st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=3),
        st.integers(),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.sampled_from("ab"), st.integers(), max_size=2),
    ),
    n=st.integers(0, 3),
)
def test_a_predict_input_id_must_be_a_string_or_an_integer(id_, n):
    """A rerun compares ids with the output's: a list or an object as id cannot even be looked up."""
    lines = [json.dumps({"id": f"r{i}", "text": "Fever?"}) for i in range(3)]
    lines.insert(n, json.dumps({"id": id_, "text": "Cough?"}))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_text("\n".join(lines), encoding="utf-8")
        rows = refused_at(f"{path}:{n + 1}", lambda: read_inputs(path))
    valid = isinstance(id_, str | int) and not isinstance(id_, bool) and id_ not in ("r0", "r1", "r2")
    assert (rows is not None) == valid, (id_, rows)


@pytest.mark.parametrize("layout", ["scope", "predict"])
@examples(40)
@given(data_=st.data())
def test_scope_and_predict_inputs_are_well_formed_or_a_located_data_error(layout, data_):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "questions.jsonl"
        path.write_bytes(data_.draw(jsonl_file(layout), label="file"))
        try:
            rows = read_scope_questions(path) if layout == "scope" else read_inputs(path)
        except DataError as err:
            assert_names_file(err, path)
            return
    assert_writable(rows)
    for row in rows:
        assert isinstance(row["text"], str)
        if layout == "scope":
            assert row["text"].strip() and isinstance(row["in_scope"], bool)
    if layout == "predict":
        assert all(isinstance(r["id"], str | int) and not isinstance(r["id"], bool) for r in rows)
        assert len({r["id"] for r in rows}) == len(rows), "ids are unique"


# ---- splits and the prepare stage end to end ----------------------------------------------------------------


@examples(80)
@given(
    prompts=st.lists(
        st.sampled_from(["What is gout?", "what is GOUT", "Flu?", "Fever?", "Cough?", "Rash?"])
        | st.text("abc", min_size=1, max_size=3),
        max_size=12,
    ),
    validation=st.sampled_from([0.1, 0.25, 0.5]),  # config.validate refuses a share outside (0, 1)
    test=st.sampled_from([0.1, 0.25, 0.4]),
    seed=st.integers(0, 3),
)
def test_a_split_is_a_leakage_free_partition_or_a_data_error_when_one_would_be_empty(prompts, validation, test, seed):
    records = [{"id": str(i), "prompt": p, "response": "A."} for i, p in enumerate(prompts)]
    try:
        splits = data.split_records(records, {"validation": validation, "test": test}, seed, "qa.jsonl")
    except DataError as err:
        assert "split is empty" in err.problem
        return
    assert sorted(r["id"] for s in splits.values() for r in s) == sorted(r["id"] for r in records)
    for name in data.SPLITS:
        assert splits[name], f"{name} is empty"
    assert data.count_leakage(splits) == {}


def clean_file(fmt: str, n: int) -> bytes:
    """n well-formed question-answer records; few of them leave a split empty."""
    rows = [LAYOUTS["sft"][0](i) for i in range(n)]
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows).encode()
    return ("id,question,answer\n" + "".join(f"{r['id']},{r['question']},{r['answer']}\n" for r in rows)).encode()


@examples(25)
@given(
    data_=st.data(),
    fmt=st.sampled_from(["jsonl", "csv"]),
    on_invalid=st.sampled_from(["error", "drop"]),
    validation=st.sampled_from([0.1, 0.3]),  # a share of 0 is refused when params are read (test_config)
)
def test_the_prepare_stage_writes_every_split_or_fails_with_our_error_and_no_output(data_, fmt, on_invalid, validation):
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    qa = params["tasks"]["qa"]
    qa["data"].update(path=f"data/raw/qa.{fmt}", on_invalid=on_invalid)
    qa["split"] = {"validation": validation, "test": 0.2}
    params["tasks"] = {"qa": qa}
    params["export"]["tasks"] = []
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        project = Path(tmp)
        (project / "data" / "raw").mkdir(parents=True)
        (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
        clean = data_.draw(st.integers(0, 20).map(lambda n: clean_file(fmt, n)), label="clean file")
        content = data_.draw(st.just(clean) | FILES[fmt]("sft"), label="file")
        (project / "data" / "raw" / f"qa.{fmt}").write_bytes(content)
        patch.chdir(project)
        patch.setattr(sys, "argv", ["prepare", "qa", "data/prepared/qa"])
        try:
            prepare.main()
        except MedtuneError as err:
            event("refused")
            assert isinstance(err, DataError), err
            prepared = project / "data" / "prepared"
            assert not prepared.exists() or not any(prepared.iterdir()), "partial output left behind"
            return
        event("prepared")
        out = project / "data" / "prepared" / "qa"
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
        splits = {
            n: [json.loads(line) for line in (out / f"{n}.jsonl").read_text(encoding="utf-8").splitlines()]
            for n in data.SPLITS
        }
    assert [len(splits[n]) for n in data.SPLITS] == [stats[n] for n in data.SPLITS]
    assert all(splits[n] for n in data.SPLITS)
    assert_well_formed([r for s in splits.values() for r in s], "sft", [])


# ---- the config loader --------------------------------------------------------------------------------------

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
# qlora, so that the keys of its quantization block are changed too
PARAMS["peft"].update(method="qlora", quantization={"bits": 4, "quant_type": "nf4", "double_quant": True})
PARAMS["peft"]["quantization"]["compute_dtype"] = "bfloat16"
FREE = ("columns", "train")  # maps of free names under a task: source columns, per-task training overrides


def key_paths(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of every key in a parsed params.yaml."""
    if not isinstance(node, dict):
        return []
    return [p for key, value in node.items() for p in [(*path, key), *key_paths(value, (*path, key))]]


ALL_KEYS = key_paths(PARAMS)
# keys the schema names: not task names, nor the names in a task's free maps, nor the names of harness.lists
SCHEMA_KEYS = [
    p
    for p in ALL_KEYS
    if (p[0] != "tasks" or (len(p) > 2 and not set(p[2:-1]) & set(FREE)))
    and not (len(p) > 2 and p[:2] == ("harness", "lists"))
]


def schema_fields(path: tuple[str, ...]) -> list[str]:
    """The valid keys under `path`, read from the dataclasses of medtune.config (tasks.<name>: any name;
    align.train overrides the keys of train)."""
    if path == ("align", "train"):
        return [f.name for f in dataclasses.fields(TrainConfig)]
    node: Any = Params
    for part in path:
        node = typing.get_type_hints(node)[part] if dataclasses.is_dataclass(node) else typing.get_args(node)[1]
        if isinstance(node, types.UnionType):  # X | None -> X
            node = next(a for a in typing.get_args(node) if dataclasses.is_dataclass(a))
    return [f.name for f in dataclasses.fields(node)]


def at(raw: dict, path: tuple[str, ...]) -> Any:
    for part in path:
        raw = raw[part]
    return raw


yaml_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
        st.sampled_from(["${nope}", "???", "${model.name}", "1e3"]),
    ),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.none()), kids, max_size=3)
    ),
    max_leaves=5,
)


@examples(60)
@given(
    path=st.sampled_from(ALL_KEYS),
    change=st.sampled_from(["value", "unknown key", "delete"]),
    value=yaml_values,
    name=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8),
)
def test_a_changed_params_yaml_loads_or_fails_with_a_config_error_naming_the_key(path, change, value, name):
    raw = copy.deepcopy(PARAMS)
    parent = at(raw, path[:-1])
    changed = ".".join((*path[:-1], name) if change == "unknown key" else path)
    if change == "value":
        parent[path[-1]] = value
    elif change == "unknown key":
        parent[name] = value
    else:
        del parent[path[-1]]
    with tempfile.TemporaryDirectory() as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        try:
            params = load_params(params_file)
        except ConfigError as err:
            assert names_the_change(err.key, changed), f"{err} for {changed}"
            return
    loaded = OmegaConf.to_container(params, resolve=True)
    assert_writable(loaded)
    assert_typed(loaded, Params)


# keys that constrain one another: a change to the first can fail on the second
DEPENDENCIES = {
    ("export.types", "export.ollama"),  # the type the Modelfile serves must be one that is written
    ("peft.method", "peft.quantization"),  # only qlora has one
    ("judge.enabled", "judge.url"),  # an enabled judge needs its endpoint
    *(("model.weights.source", f"model.weights.{key}") for key in ("hub_id", "file", "init_seed")),  # its own keys
}
TASK_DEPENDENCIES = {  # within one task (medtune.checks.check_task)
    ("data.source", "data.path"),
    ("data.source", "data.hub_id"),
    ("kind", "data.columns"),
    ("kind", "labels"),
    ("kind", "orphan_inside"),
}


def names_the_change(key: str, changed: str) -> bool:
    """The error's key is the changed key, a key inside it, a key that depends on it, or the task setting it
    belongs to (a column map that lacks a column, split shares whose sum is too big)."""
    if key == changed or key.startswith((f"{changed}.", f"{changed}[")) or (changed, key) in DEPENDENCIES:
        return True
    parts, changed_parts = key.split("."), changed.split(".")
    if parts[0] != "tasks" or parts[:2] != changed_parts[:2] or len(parts) < 3:
        return False
    own, changed_own = ".".join(parts[2:]), ".".join(changed_parts[2:])
    return changed_own.startswith(f"{own}.") or (changed_own, own) in TASK_DEPENDENCIES


def assert_typed(value: Any, hint: Any, key: str = "") -> None:
    """`value` (a loaded params.yaml) has the types medtune.config declares, down to the items of lists and maps."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType):  # X | None
        if value is not None:
            assert_typed(value, next(a for a in args if a is not type(None)), key)
    elif dataclasses.is_dataclass(hint):
        assert isinstance(value, dict), (key, value)
        for name, field_hint in typing.get_type_hints(hint).items():
            assert_typed(value[name], field_hint, f"{key}.{name}")
    elif typing.get_origin(hint) is list:
        assert isinstance(value, list), (key, value)
        for i, item in enumerate(value):
            assert_typed(item, args[0], f"{key}[{i}]")
    elif typing.get_origin(hint) is dict:
        assert isinstance(value, dict), (key, value)
        for name, item in value.items():
            assert isinstance(name, str), (key, name)
            assert_typed(item, args[1], f"{key}.{name}")
    elif hint is float:
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
    elif hint is not Any:
        assert isinstance(value, hint) and (hint is bool or not isinstance(value, bool)), (key, value)


def load_params_error(content: bytes) -> ConfigError:
    """The ConfigError of a params.yaml with `content`, which names the file (every message does)."""
    with tempfile.TemporaryDirectory() as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_bytes(content)
        with pytest.raises(ConfigError) as caught:
            load_params(params_file)
    assert str(params_file) in caught.value.problem, caught.value
    return caught.value


@examples(60)
@given(content=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)))
def test_random_params_yaml_content_fails_with_a_config_error(content):
    load_params_error(content)


DEEP = "[" * 300 + "]" * 300  # deeper than OmegaConf can merge, not than PyYAML can read


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b"\xff\xfeseed: 1", "-"),  # UTF-16: the file
        (b"seed: 1\n\x00", "-"),
        (("[" * 5000).encode(), "-"),
        (("a: " + "{" * 5000).encode(), "-"),
        (f"tasks: {{qa: {{train: {{x: {DEEP}}}}}}}".encode(), "-"),  # train overrides may hold anything
        (b"a: !!binary 12", "-"),
        (b"a: !!python/object:os.system {}", "-"),
        (b"a: *unknown", "-"),
        (b"\ttrain: 1", "-"),
        (b"- 1\n- 2", "-"),
        (b"null", "-"),
        ("\ufeffseed: 1".encode(), "align.beta"),  # a BOM is fine; the first key missing is named
        (b"train: 5", "train"),  # a value where a section belongs
        (b"tasks: {qa: {metrics: {}}}", "tasks.qa.metrics"),  # a section where a list belongs
        (b"tasks: {qa: {labels: [[O]]}}", "tasks.qa.labels[0]"),  # a list where text belongs
        (b"tasks: {qa: {data: {columns: {prompt: [q]}}}}", "tasks.qa.data.columns.prompt"),
        (b"1: 2", "1"),  # keys that are not text
        (b"train: {1: 2}", "train.1"),
        (b"2020-01-01: x", "2020-01-01"),
        (b"seed: .nan", "seed"),  # NaN or Infinity
        (b"train: {lr: .inf}", "train.lr"),
    ],
)
def test_malformed_params_yaml_fails_with_a_config_error_naming_the_key_or_the_file(content, key):
    assert load_params_error(content).key == key


@st.composite
def misspelled(draw: st.DrawFn, key: str) -> str:
    """`key` with one letter inserted, deleted, replaced, or two neighbours swapped."""
    i = draw(st.integers(0, len(key) - 1))
    letter = draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz_"))
    edit = draw(st.sampled_from(["insert", "delete", "replace", "swap"] if len(key) > 1 else ["insert", "replace"]))
    if edit == "insert":
        return key[:i] + letter + key[i:]
    if edit == "delete":
        return key[:i] + key[i + 1 :]
    if edit == "replace":
        return key[:i] + letter + key[i + 1 :]
    i = min(i, len(key) - 2)
    return key[:i] + key[i + 1] + key[i] + key[i + 2 :]


@examples(80)
@given(data_=st.data(), path=st.sampled_from(SCHEMA_KEYS))
def test_a_misspelled_key_at_any_level_is_refused_with_the_closest_valid_key(data_, path):
    key = path[-1]
    typo = data_.draw(misspelled(key), label="typo")
    valid = schema_fields(path[:-1])
    assume(typo not in valid)
    raw = copy.deepcopy(PARAMS)
    parent = at(raw, path[:-1])
    parent[typo] = parent.pop(key)
    with pytest.raises(ConfigError) as caught:
        validate(raw)
    assert caught.value.key == ".".join((*path[:-1], typo))
    similarity = {k: difflib.SequenceMatcher(None, typo, k).ratio() for k in valid}
    if similarity[key] >= 0.6 and similarity[key] == max(similarity.values()):
        suggested = re.search(r"did you mean `(\w+)`\?", caught.value.problem)
        assert suggested, caught.value
        assert similarity[suggested.group(1)] == similarity[key], caught.value
    else:
        assert "did you mean" in caught.value.problem or key in caught.value.problem, caught.value


def test_misspelled_keys_from_the_issue_are_refused_with_the_right_key():
    for path, typo in [
        (("train", "lr"), "lrr"),
        (("peft", "alpha"), "alhpa"),
        (("tasks", "qa", "max_length"), "max_lenght"),
        (("model", "architecture", "hidden_size"), "hiden_size"),
        (("peft", "quantization", "bits"), "bit"),
        (("align", "train", "lr"), "alr"),  # a map of overrides of train: train's keys
    ]:
        raw = copy.deepcopy(PARAMS)
        parent = at(raw, path[:-1])
        parent[typo] = parent.pop(path[-1])
        with pytest.raises(ConfigError, match=rf"did you mean `{path[-1]}`\?"):
            validate(raw)


def test_the_schema_walk_of_these_tests_covers_nested_sections():
    assert "hidden_size" in schema_fields(("model", "architecture"))
    assert "bits" in schema_fields(("peft", "quantization"))
    assert "max_length" in schema_fields(("tasks", "qa"))
    assert "lr" in schema_fields(("align", "train"))


# ---- training intervals: a step count or a fraction of an epoch --------------------------------------------------


@examples(60)
@given(
    key=st.sampled_from(["eval_steps", "checkpoint_steps"]),
    every=st.floats(-2, 1e6, allow_nan=False) | st.integers(-2, 10**6) | st.sampled_from([0, 0.5, 1, 2.5, 20]),
    logging_steps=st.integers(1, 50),
    examples_=st.integers(1, 100_000),
    batch_size=st.integers(1, 64),
    grad_accum=st.integers(1, 16),
)
def test_a_training_interval_that_loads_becomes_steps_training_can_use(
    key, every, logging_steps, examples_, batch_size, grad_accum
):
    """Whatever validate accepts, interval_steps turns into whole optimizer steps, at least one, and a checkpoint
    interval into a multiple of logging_steps; a fraction of an epoch is rounded up by less than that multiple."""
    raw = copy.deepcopy(PARAMS)
    raw["train"].update({"checkpoint_steps": 0, key: every, "logging_steps": logging_steps})  # only `key` varies
    fraction, whole = 0 < every < 1, every >= 1 and float(every).is_integer()
    checkpoints = key == "checkpoint_steps"
    accepted = fraction or (whole and (not checkpoints or every % logging_steps == 0)) or (checkpoints and every == 0)
    try:
        train = validate(raw).train
    except ConfigError as err:
        assert not accepted and err.key == f"train.{key}", err
        return
    assert accepted, every
    assume(every != 0)  # 0 checkpoints: none
    multiple = logging_steps if checkpoints else 1
    epoch = steps_per_epoch(examples_, batch_size, grad_accum)
    steps = interval_steps(train[key], epoch, multiple)
    assert isinstance(steps, int) and steps >= 1 and steps % multiple == 0
    if fraction:
        assert steps - multiple < every * epoch <= steps + 1e-6  # 1e-6: 0.14 * 50 steps is 7.000000000000001
    else:
        assert steps == every


@examples(100)
@given(count=st.integers(0, 300), max_examples=st.none() | st.integers(1, 400), seed=st.integers(0, 2**32))
def test_a_record_sample_is_a_seeded_subsequence_of_at_most_max_records(count, max_examples, seed):
    examples = [{"id": i} for i in range(count)]
    sample = data.sample_records(examples, max_examples, seed)
    assert len(sample) == (count if max_examples is None else min(count, max_examples))
    assert [e["id"] for e in sample] == sorted({e["id"] for e in sample})  # distinct, in the split's order
    assert sample == data.sample_records(examples, max_examples, seed)
