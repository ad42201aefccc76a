"""Batch prediction with a task's fine-tuned model, resumable.

Input: JSONL, one `{"text": ...}` object per line; other fields are kept, and `id` (default: `line-<n>`, the
row's line number in the file) names the row. Output: the same objects plus `entities` (token classification:
spans with character offsets) or `output` and `safety_note` (generative tasks: the greedy answer unchanged, as in
evaluation, and the safety note that `medtune chat` would append to it, or null when the answer carries a
disclaimer already; batch prediction has no scope guard). Results are appended one batch at a time, and a rerun
skips the ids already in the output, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tqdm import tqdm

from medtune.config import TaskConfig
from medtune.data import read_local_rows
from medtune.errors import DataError
from medtune.io import atomic_write_text


def read_inputs(path: Path) -> list[dict]:
    """The rows to predict, each with an `id`; a row without a string `text` is a DataError naming file:line."""
    rows, seen = [], set()
    for where, row in read_local_rows(path):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError(where, 'expected an object with a text field "text"')
        row = {"id": default_id(path, where), **row}
        if isinstance(row["id"], bool) or not isinstance(row["id"], str | int):  # ids are compared on a rerun
            raise DataError(where, f'field "id" must be a string or an integer, not {type(row["id"]).__name__}')
        if row["id"] in seen:
            raise DataError(where, f"duplicate id {row['id']!r}")
        seen.add(row["id"])
        rows.append(row)
    return rows


def default_id(path: Path, where: str) -> str:
    """`line-<n>` for a row at `path:n` (JSONL, CSV), `record-<n>` for one at `path (record n)` (JSON, Parquet):
    the id says where the row is in the input, as an editor counts, blank lines included."""
    line, record = re.fullmatch(r":(\d+)| \(record (\d+)\)", where.removeprefix(str(path))).groups()
    return f"line-{line}" if line else f"record-{record}"


def finished_ids(output: Path) -> set[str | int]:
    """Ids already in `output`. A last line without its newline was cut short by a kill (results are only
    appended, each with its newline): it is removed, so the file stays valid JSONL. Any other damage is a
    DataError naming the line, since appending after it would bury it."""
    if not output.is_file():
        return set()
    text = output.read_text(encoding="utf-8")
    lines = text.split("\n")  # not splitlines(): that also splits at U+2028 and others, which JSON leaves in strings
    partial = lines.pop()  # "" when the file ends with a newline
    ids = {_finished_id(f"{output}:{n}", line) for n, line in enumerate(lines, start=1)}
    if partial:
        atomic_write_text(output, text.removesuffix(partial))
    return ids


def _finished_id(where: str, line: str) -> str | int:
    """The id of a result line as `predict_file` writes it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(
            where, f"not valid JSON ({err.msg} at column {err.colno}); fix or delete this result line"
        ) from None
    row_id = row.get("id") if isinstance(row, dict) else None
    if isinstance(row_id, bool) or not isinstance(row_id, str | int):
        raise DataError(where, 'not a result row: expected an object with a string or integer "id"')
    return row_id


class Predictor:
    """Loads the model for the task kind once; `predict(texts)` gives the fields to add to each row."""

    def __init__(self, task: TaskConfig, model_dir: Path) -> None:
        from medtune.modeling import device, load_causal_lm, load_token_classifier, load_tokenizer

        self.task = task
        self.tokenizer = load_tokenizer(model_dir)
        if task.kind == "token_classification":
            self.model = load_token_classifier(model_dir, list(task.labels)).to(device()).eval()
        else:
            self.model = load_causal_lm(model_dir)

    def predict(self, texts: list[str], batch_size: int) -> list[dict]:
        from medtune.assistant import SAFETY_NOTE
        from medtune.generation import extract_entities, generate
        from medtune.metrics import has_disclaimer
        from medtune.tasks import render_prompt, user_message

        task = self.task
        if task.kind == "token_classification":
            found = extract_entities(self.model, self.tokenizer, texts, list(task.labels), task.max_length, batch_size)
            return [{"entities": entities} for entities in found]
        prompts = [render_prompt(self.tokenizer, task.system, user_message(task.prompt_template, t)) for t in texts]
        outputs = generate(self.model, self.tokenizer, prompts, task.generation.max_new_tokens, batch_size).texts
        # the note beside the answer, not in it: `output` stays what the model wrote, for scoring and comparison
        return [
            {"output": output, "safety_note": None if has_disclaimer(output) else SAFETY_NOTE} for output in outputs
        ]


def predict_file(predictor: Predictor, input_path: Path, output: Path, batch_size: int) -> tuple[int, int]:
    """Predict every row of `input_path` not yet in `output`, appending batch by batch; (written, skipped)."""
    rows = read_inputs(input_path)
    done = finished_ids(output)
    todo = [row for row in rows if row["id"] not in done]
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as out:
        for start in tqdm(range(0, len(todo), batch_size), desc="predicting", unit="batch"):
            batch = todo[start : start + batch_size]
            results = predictor.predict([row["text"] for row in batch], batch_size)
            out.writelines(
                json.dumps({**row, **r}, ensure_ascii=False) + "\n" for row, r in zip(batch, results, strict=True)
            )
            out.flush()
    return len(todo), len(rows) - len(todo)
