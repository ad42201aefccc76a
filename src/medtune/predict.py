"""Batch prediction with a task's fine-tuned model, resumable.

Input: JSONL, one `{"text": ...}` object per line; other fields are kept, and `id` (default: `line-<n>`) names the
row. Output: the same objects plus `entities` (token classification: spans with character offsets) or `output`
(generative tasks: the greedy answer, as in evaluation; batch prediction has no scope guard). Results are
appended one batch at a time, and a rerun skips the ids already in the output, so an interrupted run continues
where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medtune.data import read_local_rows
from medtune.errors import DataError
from medtune.io import atomic_write_text


def read_inputs(path: Path) -> list[dict]:
    """The rows to predict, each with an `id`; a row without a string `text` is a DataError naming file:line."""
    rows, seen = [], set()
    for n, (where, row) in enumerate(read_local_rows(path), start=1):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError(where, 'expected an object with a text field "text"')
        row = {"id": f"line-{n}", **row}
        if isinstance(row["id"], bool) or not isinstance(row["id"], str | int):  # ids are compared on a rerun
            raise DataError(where, f'field "id" must be a string or an integer, not {type(row["id"]).__name__}')
        if row["id"] in seen:
            raise DataError(where, f"duplicate id {row['id']!r}")
        seen.add(row["id"])
        rows.append(row)
    return rows


def finished_ids(output: Path) -> set[str]:
    """Ids already in `output`. A last line cut short by a kill is removed, so the file stays valid JSONL."""
    if not output.is_file():
        return set()
    lines = output.read_text(encoding="utf-8").splitlines(keepends=True)
    try:
        rows = [json.loads(line) for line in lines]
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in lines[:-1]]  # only the last line can be partial (appends)
        atomic_write_text(output, "".join(lines[:-1]))
    return {row["id"] for row in rows}


class Predictor:
    """Loads the model for the task kind once; `predict(texts)` gives the fields to add to each row."""

    def __init__(self, task: Any, model_dir: Path) -> None:
        from medtune.modeling import device, load_causal_lm, load_token_classifier, load_tokenizer

        self.task = task
        self.tokenizer = load_tokenizer(model_dir)
        if task.kind == "token_classification":
            self.model = load_token_classifier(model_dir, list(task.labels)).to(device()).eval()
        else:
            self.model = load_causal_lm(model_dir)

    def predict(self, texts: list[str], batch_size: int) -> list[dict]:
        from medtune.generation import extract_entities, generate
        from medtune.tasks import render_prompt, user_message

        task = self.task
        if task.kind == "token_classification":
            found = extract_entities(self.model, self.tokenizer, texts, list(task.labels), task.max_length, batch_size)
            return [{"entities": entities} for entities in found]
        prompts = [render_prompt(self.tokenizer, task.system, user_message(task.prompt_template, t)) for t in texts]
        outputs = generate(self.model, self.tokenizer, prompts, task.generation.max_new_tokens, batch_size).texts
        return [{"output": output} for output in outputs]


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
