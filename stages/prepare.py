"""Stage `prepare@<task>`: raw dataset -> validated, de-duplicated, leakage-free train/validation/test JSONL.

Reads params: seed, privacy.phi, tasks.<task>.{kind,data,split,labels,orphan_inside}.
    python -m stages.prepare qa data/prepared/qa
Writes {train,validation,test}.jsonl with `{"id", "prompt", "response"}` (sft) or `{"id", "tokens", "tags"}`
(token_classification, IOB2) records, and stats.json (with the PHI scan's counts per type; see medtune.privacy).
"""

import argparse
from pathlib import Path

from medtune import data, privacy
from medtune.config import load_params, task_config
from medtune.console import log, run_main
from medtune.io import atomic_dir, write_json, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    task = task_config(params, args.task)
    source = data.source_name(task.data)
    log.info("Reading %s", source)
    rows = data.read_rows(task.data, f"tasks.{args.task}.data")
    records, problems = data.to_task_records(rows, task)
    records, phi_counts, phi_locations = privacy.apply_phi_policy(records, params.privacy.phi)
    records, duplicates = data.drop_duplicates(records)
    sampled = data.sample_records(records, task.data.max_records, params.seed)
    splits = data.split_records(sampled, task.split.validation, task.split.test, params.seed, source)

    stats = {
        "source": source,
        "rows_read": len(rows),
        "invalid_dropped": len(problems),
        "invalid_examples": problems[:20],
        "phi_policy": params.privacy.phi,
        "phi": phi_counts,
        "phi_examples": phi_locations,
        "duplicates_dropped": duplicates,
        "sampled_out": len(records) - len(sampled),
        **{name: len(split) for name, split in splits.items()},
    }
    with atomic_dir(args.out_dir) as tmp:
        for name, split in splits.items():
            write_jsonl(tmp / f"{name}.jsonl", split)
        write_json(tmp / "stats.json", stats)
    log.info(
        "%d rows -> train %d / validation %d / test %d (%d invalid dropped, %d duplicates dropped)",
        len(rows),
        stats["train"],
        stats["validation"],
        stats["test"],
        len(problems),
        duplicates,
    )


if __name__ == "__main__":
    run_main(main)
