"""Stage `merge@<task>`: fold the LoRA adapter into the base weights -> a standalone model.

Reads no params.
    python -m stages.merge data/tokenized/qa models/base/smollm2-135m models/adapters/qa models/merged/qa metrics/qa
Checks that the merged model's logits equal the adapter model's on test inputs (max |diff| <= 1e-4 in fp32)
and records the difference in metrics/<task>/merge.json.
"""

import argparse
from pathlib import Path

from medtune.console import log, run_main
from medtune.errors import MedtuneError
from medtune.io import atomic_dir, read_jsonl, write_json
from medtune.modeling import load_tokenizer, merge_adapter

MAX_LOGIT_DIFF = 1e-4  # fp32 merge is exact up to float rounding; more means the merge went wrong
PROBE_EXAMPLES = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokenized_dir", type=Path)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("adapter_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("metrics_dir", type=Path)
    args = parser.parse_args()

    probe = [e["input_ids"] for e in read_jsonl(args.tokenized_dir / "test.jsonl")[:PROBE_EXAMPLES]]
    merged, diff = merge_adapter(args.base_dir, args.adapter_dir, probe)
    log.info("Max |logit difference| adapter vs merged on %d test inputs: %.2e", len(probe), diff)
    if diff > MAX_LOGIT_DIFF:
        raise MedtuneError(f"merged model differs from the adapter model by {diff:.2e} > {MAX_LOGIT_DIFF:.0e}")
    with atomic_dir(args.out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(args.base_dir).save_pretrained(tmp)
    write_json(args.metrics_dir / "merge.json", {"max_abs_logit_diff": diff, "probe_examples": len(probe)})


if __name__ == "__main__":
    run_main(main)
