"""Stage `prepare@<task>`: raw dataset -> validated, de-duplicated train/validation/test JSONL.

Reads params: seed, privacy.phi, tasks.<task>.{kind,data,split,labels,orphan_inside}.
    python -m stages.prepare qa data/prepared/qa
The splits a task names (`data.splits`: a corpus's official files, or a hub dataset's splits) are kept as given; the
others are carved from train by seed, leakage-free. Writes {train,validation,test}.jsonl with
`{"id", "prompt", "response"}` (sft) or `{"id", "tokens", "tags"}` (token_classification, IOB2) records, and
stats.json: where each split came from, a hub dataset's commit, the texts shared by named splits, the PHI scan's
counts per type (medtune.privacy), and what was dropped.
"""

import argparse
from pathlib import Path

from medtune import data, privacy
from medtune.config import load_params, task_config
from medtune.console import log, run_main
from medtune.errors import DataError
from medtune.io import atomic_dir, write_json, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    task = task_config(params, args.task)
    name, key = data.source_name(task.data), f"tasks.{args.task}.data"
    log.info("Reading %s", name)
    source = data.read_source(task.data, key)
    if source.commit and source.commit != task.data.revision:  # none, a branch or a ref: it can move
        log.warning("%s is not pinned: set %s.revision=%s to read this exact version again", name, key, source.commit)

    named, problems = {}, []
    numbered_per_split = task.data.splits and not task.data.id_column  # ids row-000001... in every named split
    for split, rows in source.splits.items():
        records, dropped = data.to_task_records(rows, task, source.tag_names)
        named[split] = data.name_ids_by_split(records, split) if numbered_per_split else records
        problems += dropped
    named, phi_counts, phi_locations = scan_phi(named, params.privacy.phi)
    pool, duplicates = data.drop_duplicates(named.pop("train"))  # the splits a dataset names are never altered
    sampled = data.sample_records(pool, task.data.max_records, params.seed)
    carved = data.split_records(sampled, data.carved_shares(task), params.seed, name)
    given_or_carved = named | carved
    whole = {split: given_or_carved[split] for split in data.SPLITS}
    splits = {s: data.sample_records(r, task.data.split_max_records.get(s), params.seed) for s, r in whole.items()}
    leakage = data.count_leakage(splits)
    if leakage:
        shared = ", ".join(f"{n} ({pair})" for pair, n in leakage.items())
        if task.data.on_leakage == "error":
            raise DataError(name, f"the named splits share texts: {shared}; {key}.on_leakage=warn keeps them")
        log.warning("The named splits share texts: %s (kept as given; counted in stats.json)", shared)

    stats = {
        "source": name,
        "commit": source.commit,
        "splits": data.split_plan(task),
        "rows_read": sum(len(rows) for rows in source.splits.values()),
        "invalid_dropped": len(problems),
        "invalid_examples": problems[:20],
        "phi_policy": params.privacy.phi,
        "phi": phi_counts,
        "phi_examples": phi_locations,
        "duplicates_dropped": duplicates,
        "sampled_out": len(pool) - len(sampled) + sum(len(whole[s]) - len(splits[s]) for s in data.SPLITS),
        "leakage": leakage,
        **{split: len(records) for split, records in splits.items()},
    }
    with atomic_dir(args.out_dir) as tmp:
        for split, records in splits.items():
            write_jsonl(tmp / f"{split}.jsonl", records)
        write_json(tmp / "stats.json", stats)
    sizes = " / ".join(f"{split} {len(records)}" for split, records in splits.items())
    dropped = f"{len(problems)} invalid dropped, {duplicates} duplicates dropped"
    log.info("%d rows -> %s (%s)", stats["rows_read"], sizes, dropped)


def scan_phi(splits: dict[str, list[dict]], policy: str) -> tuple[dict[str, list[dict]], dict, list]:
    """`privacy.apply_phi_policy` over the records of every split at once (one warning, one count)."""
    records, counts, locations = privacy.apply_phi_policy([r for rs in splits.values() for r in rs], policy)
    scanned, start = {}, 0
    for split, rs in splits.items():
        scanned[split], start = records[start : start + len(rs)], start + len(rs)
    return scanned, counts, locations


if __name__ == "__main__":
    run_main(main)
