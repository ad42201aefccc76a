"""Stage `tokenize@<task>`: prepared records -> token ids and labels with the base model's chat template.

Reads params: tasks.<task>.{kind,system,prompt_template,max_length,labels}, train.max_length (wins when set).
    python -m stages.tokenize qa data/prepared/qa models/base/smollm2-135m data/tokenized/qa
Writes {train,validation,test}.jsonl with `{"id", "input_ids", "labels"}` (sft: prompt tokens labelled -100;
token_classification: tag ids on each word's first sub-token, plus a `window` index) and stats.json with token
counts and how many examples were truncated, dropped or split into windows, and under `data` where the prepared
splits came from (a hub dataset's commit, given or carved splits, texts shared by named splits), for the model card.
"""

import argparse
from pathlib import Path

from medtune.config import load_params, max_length, task_config
from medtune.console import log, run_main
from medtune.data import SPLITS
from medtune.io import atomic_dir, read_json, read_jsonl, write_json, write_jsonl
from medtune.modeling import load_tokenizer
from medtune.tasks import tokenize_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    task, length = task_config(params, args.task), max_length(params, args.task)
    tokenizer = load_tokenizer(args.base_dir)
    prepared = read_json(args.prepared_dir / "stats.json")
    stats = {"data": {key: prepared[key] for key in ("source", "commit", "splits", "leakage")}}  # for the model card
    with atomic_dir(args.out_dir) as tmp:
        for split in SPLITS:
            records = read_jsonl(args.prepared_dir / f"{split}.jsonl")
            examples, stats[split] = tokenize_records(tokenizer, records, task, length)
            write_jsonl(tmp / f"{split}.jsonl", examples)
            log.info("%s: %s", split, stats[split])
        write_json(tmp / "stats.json", stats)


if __name__ == "__main__":
    run_main(main)
