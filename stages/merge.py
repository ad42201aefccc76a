"""Stage `merge@<task>`: fold the LoRA adapter into the base weights -> a standalone model (with peft=full, the
fine-tuned model itself, saved again with its tokenizer and card).

Reads params: model, peft, train, seed, tasks.<task> (the model card records them).
    python -m stages.merge qa data/tokenized/qa models/base/smollm2-135m models/adapters/qa models/merged/qa metrics/qa
Checks that the merged model's logits equal the adapter model's on test inputs up to fp32 rounding
(medtune.modeling.MAX_RELATIVE_LOGIT_DIFF["merge"]), and that the saved folder, loaded back as evaluate loads it,
gives the same logits (`saved`); records both in metrics/<task>/merge.json.
Writes the model card (README.md) next to the weights; its test-split metrics come later, from evaluate (see
medtune.card).
"""

import argparse
from pathlib import Path

from medtune.card import model_card
from medtune.config import load_params, task_config
from medtune.console import run_main
from medtune.io import atomic_dir, check_free_space, read_json, write_json
from medtune.modeling import (
    check_merge,
    compare_logits,
    load_model,
    load_tokenizer,
    merge_adapter,
    probe_logits,
    probe_sequences,
)


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
    if params.peft.method == "full":  # the train stage saved the whole model: nothing to fold in
        merged, check = load_model(args.adapter_dir, labels, task.attention), {}
    else:
        merged, check = merge_adapter(args.base_dir, args.adapter_dir, probe, labels, task.attention)
        check_merge(check, "Adapter vs merged", f"the merged {args.task} model", "the adapter model", len(probe))
    with atomic_dir(args.out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(args.base_dir).save_pretrained(tmp)
        origin = read_json(args.tokenized_dir / "stats.json").get("data")
        card = model_card(args.task, params, read_json(args.metrics_dir / "train.json"), None, data_origin=origin)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        # Loaded back as evaluate, predict and serve load it: the saved files (attention mode included) are the model
        saved = compare_logits(probe_logits(merged, probe), probe_logits(load_model(tmp, labels), probe))
        what, original = f"the saved {args.task} model", "the model it was saved from"
        check_merge(saved, "Saved vs in memory", what, original, len(probe))
    write_json(args.metrics_dir / "merge.json", {**check, "saved": saved, "probe_examples": len(probe)})


if __name__ == "__main__":
    run_main(main)
