"""Stage `pairs@<task>` (opt-in, `align.tasks`): preference pairs for DPO, built from the task's SFT model or
given by the user.

Not part of the default run: medtune params 'align.tasks=[simplification]' && dvc repro pairs@simplification
Reads params: seed, align.pairs, align.given, tasks.<task>.{system,prompt_template,generation,metrics},
eval.batch_size.
    python -m stages.pairs simplification data/prepared/simplification models/merged/simplification \
        data/preference/simplification data/pairs/simplification
Sampled (the default): for each training and validation prompt the merged SFT model samples `align.pairs.samples`
answers (seeded); they and the reference answer are scored by the task's own checks, and the best and the worst form
a pair when their scores differ by more than `align.pairs.margin` (medtune.preference).
Given (the task is in `align.given`): the user's pairs in data/preference/<task>/ (medtune.data.read_given_pairs).
Writes {train,validation}.jsonl (`{"id", "prompt", "chosen", "rejected", ...}`, TRL's preference format) and
stats.json (sampled: pairs made, ties skipped, the faults of the rejected answers; given: files and counts), all at
once or nothing.
"""

import argparse
from pathlib import Path

from medtune.config import Params, load_params, task_config
from medtune.console import log, run_main
from medtune.data import read_given_pairs, sample_records
from medtune.errors import MedtuneError
from medtune.generation import sample
from medtune.io import atomic_dir, read_jsonl, write_json, write_jsonl
from medtune.modeling import load_causal_lm, load_tokenizer
from medtune.preference import PairStats, best_and_worst
from medtune.tasks import render_record_prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("prepared_dir", type=Path)
    parser.add_argument("merged_dir", type=Path)
    parser.add_argument("given_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    if args.task in params.align.given:
        log.info("Reading the given preference pairs in %s", args.given_dir)
        pairs, stats = read_given_pairs(args.given_dir, params.align.pairs.validation_share, params.seed)
    else:
        pairs, stats = sampled_pairs(args, params)
    with atomic_dir(args.out_dir) as tmp:
        for split, rows in pairs.items():
            write_jsonl(tmp / f"{split}.jsonl", rows)
        write_json(tmp / "stats.json", {"source": "given" if args.task in params.align.given else "sampled", **stats})


def sampled_pairs(args: argparse.Namespace, params: Params) -> tuple[dict, dict]:
    """The pairs of the best and worst of the SFT model's sampled answers and the reference, per split."""
    task, pairs_cfg = task_config(params, args.task), params.align.pairs
    model, tokenizer = load_causal_lm(args.merged_dir), load_tokenizer(args.merged_dir)
    sampling = {"temperature": pairs_cfg.temperature, "top_p": pairs_cfg.top_p}
    pairs, stats = {}, {}
    for split in ("train", "validation"):
        records = read_jsonl(args.prepared_dir / f"{split}.jsonl")
        if split == "train":
            records = sample_records(records, pairs_cfg.max_prompts, params.seed)
        log.info("Sampling %d answers to each of %d %s prompts", pairs_cfg.samples, len(records), split)
        prompts = [render_record_prompt(tokenizer, r, task.system, task.prompt_template) for r in records]
        answers = sample(
            model, tokenizer, prompts, pairs_cfg.samples, task.generation.max_new_tokens,
            params.eval.batch_size, sampling, params.seed,
        )  # fmt: skip
        counted, metrics = PairStats(), list(task.metrics)
        made = [best_and_worst(r, a, metrics, pairs_cfg.margin, counted) for r, a in zip(records, answers, strict=True)]
        pairs[split], stats[split] = [p for p in made if p is not None], counted.as_dict()
        log.info("%s: %s", split, stats[split])
        if not pairs[split]:
            raise MedtuneError(
                f"no {split} pairs: on every prompt the answers scored within align.pairs.margin "
                f"({pairs_cfg.margin:g}) of each other; sample more (align.pairs.samples) or lower the margin"
            )
    return pairs, stats


if __name__ == "__main__":
    run_main(main)
