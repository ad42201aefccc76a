"""Stage `merge@<task>`: fold the LoRA adapter into the base weights -> a standalone model.

Reads params: model, peft, train, seed, tasks.<task> (the model card records them).
    python -m stages.merge qa data/tokenized/qa models/base/smollm2-135m models/adapters/qa models/merged/qa metrics/qa
Checks that the merged model's logits equal the adapter model's on test inputs up to fp32 rounding
(medtune.modeling.MAX_RELATIVE_LOGIT_DIFF["merge"]) and records the difference in metrics/<task>/merge.json.
Writes the model card (README.md) next to the weights; its test-split metrics come later, from evaluate (see
medtune.card).
"""

import argparse
from pathlib import Path

from medtune.card import model_card
from medtune.config import load_params, task_config
from medtune.console import log, run_main
from medtune.io import atomic_dir, check_free_space, read_json, write_json
from medtune.modeling import check_logits, load_tokenizer, merge_adapter, probe_sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("tokenized_dir", type=Path)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("adapter_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("metrics_dir", type=Path)
    args = parser.parse_args()

    probe = probe_sequences(args.tokenized_dir)
    params = load_params()
    task = task_config(params, args.task)
    labels = list(task.labels) if task.kind == "token_classification" else None
    parameters = read_json(args.base_dir / "medtune_origin.json")["parameters"]
    check_free_space(args.out_dir, parameters * 4, f"The merged {args.task} model (fp32)")
    merged, check = merge_adapter(args.base_dir, args.adapter_dir, probe, labels, task.attention)
    log.info(
        "Adapter vs merged on %d test inputs: max |logit difference| %.2e at max |logit| %.1f (relative %.1e)",
        len(probe),
        check["max_abs_logit_diff"],
        check["max_abs_logit"],
        check["relative_logit_diff"],
    )
    check_logits(check, "merge", f"the merged {args.task} model", "the adapter model")
    with atomic_dir(args.out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(args.base_dir).save_pretrained(tmp)
        origin = read_json(args.tokenized_dir / "stats.json").get("data")
        card = model_card(args.task, params, read_json(args.metrics_dir / "train.json"), None, data_origin=origin)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    write_json(args.metrics_dir / "merge.json", {**check, "probe_examples": len(probe)})


if __name__ == "__main__":
    run_main(main)
