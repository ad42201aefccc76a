"""Stage `tokenize@<task>`: prepared records -> token ids and labels with the base model's chat template.

Reads params: tasks.<task>.system, tasks.<task>.prompt_template, tasks.<task>.max_length.
    python -m stages.tokenize qa data/prepared/qa models/base/smollm2-135m data/tokenized/qa
Writes {train,validation,test}.jsonl with `{"id", "input_ids", "labels"}` (prompt tokens labelled -100)
and stats.json with token counts and how many examples were truncated or dropped.
"""

import argparse
from pathlib import Path

from medtune.config import load_params, task_config
from medtune.console import log, run_main
from medtune.data import SPLITS
from medtune.io import atomic_dir, read_jsonl, write_json, write_jsonl
from medtune.modeling import load_tokenizer
from medtune.tasks import IGNORE_INDEX, tokenize_sft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()

    task = task_config(load_params(), args.task)
    tokenizer = load_tokenizer(args.base_dir)
    stats = {}
    with atomic_dir(args.out_dir) as tmp:
        for split in SPLITS:
            examples, truncated, dropped = [], 0, 0
            for record in read_jsonl(args.prepared_dir / f"{split}.jsonl"):
                example, was_truncated = tokenize_sft(
                    tokenizer, record, task.system, task.prompt_template, task.max_length
                )
                truncated += was_truncated
                if example is None:
                    dropped += 1
                else:
                    examples.append(example)
            write_jsonl(tmp / f"{split}.jsonl", examples)
            stats[split] = {
                "examples": len(examples),
                "truncated": truncated,
                "dropped_no_response_left": dropped,
                "tokens": sum(len(e["input_ids"]) for e in examples),
                "response_tokens": sum(sum(t != IGNORE_INDEX for t in e["labels"]) for e in examples),
                "max_tokens": max((len(e["input_ids"]) for e in examples), default=0),
            }
            log.info(
                "%s: %d examples, %d truncated to %d tokens, %d dropped",
                split,
                len(examples),
                truncated,
                task.max_length,
                dropped,
            )
        write_json(tmp / "stats.json", stats)


if __name__ == "__main__":
    run_main(main)
