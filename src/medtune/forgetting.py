"""The forgetting check: what fine-tuning on a medical task cost the model outside medicine.

The evaluate stage of every generative task scores the base and the fine-tuned model on an authored set of general
instructions (`eval.general.path`, data/raw/general.jsonl: arithmetic, everyday facts, rewriting, conversions,
sequences, a haiku), each rendered with the model's own chat template and no task system prompt, so neither model
is steered towards the task:
- `perplexity` of the short reference answers;
- `rouge_l` of the greedy answer against the reference;
- `exact_match`: the share of answers that contain the item's short `answer` (case, spacing and punctuation
  aside), over the items that have one.
They go to eval.json under `general`, each with its bootstrap interval over the items; examples.jsonl keeps their
per-item statistics (`general.<metric>`), so `medtune report` tests their changes like any other metric.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medtune.config import EvalConfig
from medtune.data import read_file_rows, text_field, to_records
from medtune.errors import DataError
from medtune.generation import Generations, example_nll, generate
from medtune.metrics import rouge_l_scores
from medtune.tasks import render_prompt, tokenize_sft

METRICS = ("perplexity", "rouge_l", "exact_match")
PREFIX = "general."  # of these metrics' names in examples.jsonl and in `interval`
_WORD = re.compile(r"\w+")


def read_general_set(path: Path, max_examples: int | None) -> list[dict]:
    """The general items of a JSONL/JSON/CSV file: `id`, `instruction`, `reference`, optional `answer`, each
    non-empty text; an item that breaks this stops the stage at its line."""

    def fields(where: str, row: dict) -> dict:
        names = ("instruction", "reference", *(("answer",) if "answer" in row else ()))
        return {name: text_field(where, row, name, name) for name in names}

    items, _ = to_records(read_file_rows(path), fields, "id", "error")
    return items[:max_examples]


def contains_answer(output: str, answer: str) -> bool:
    """Whether `answer`'s words appear in `output` in a row, case and punctuation aside ("56" in "It is 56.",
    not in "560")."""
    said, wanted = _WORD.findall(output.lower()), _WORD.findall(answer.lower())
    return any(said[i : i + len(wanted)] == wanted for i in range(len(said) - len(wanted) + 1))


def general_examples(tokenizer: Any, items: list[dict], max_length: int, path: Path) -> list[dict]:
    """Each item tokenized as an SFT example (labels on the reference only), for the references' perplexity."""
    examples = []
    for item in items:
        record = {"id": item["id"], "prompt": item["instruction"], "response": item["reference"]}
        example, _ = tokenize_sft(tokenizer, record, "", "{prompt}", max_length)
        if example is None:
            raise DataError(
                f"{path} (id {item['id']})", f"leaves no reference token within {max_length} tokens: shorten it"
            )
        examples.append(example)
    return examples


def general_statistics(
    model: Any, tokenizer: Any, items: list[dict], examples: list[dict], eval_cfg: EvalConfig
) -> tuple[dict[str, list], Generations]:
    """Per-item statistics of the metrics (`general.<metric>` -> one row per item) and the greedy answers."""
    prompts = [render_prompt(tokenizer, "", item["instruction"]) for item in items]
    answers = generate(model, tokenizer, prompts, eval_cfg.general.max_new_tokens, eval_cfg.batch_size)
    matches = [
        [float(contains_answer(text, item["answer"])), 1.0] if "answer" in item else [0.0, 0.0]
        for item, text in zip(items, answers.texts, strict=True)
    ]
    stats = {
        "perplexity": example_nll(model, examples, eval_cfg.batch_size, tokenizer.pad_token_id),
        "rouge_l": rouge_l_scores(answers.texts, [item["reference"] for item in items]),
        "exact_match": matches,
    }
    return {PREFIX + name: rows for name, rows in stats.items()}, answers
