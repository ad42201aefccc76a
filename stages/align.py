"""Stage `align@<task>` (opt-in, `align.tasks`): preference tuning of the task's SFT model with TRL's DPOTrainer.

Not part of the default run: medtune params 'align.tasks=[simplification]' && dvc repro align@simplification
Reads params: seed, peft, train, model.lora_targets, align.{beta,loss_type,max_length,train,given},
tasks.<task>.{system,prompt_template,max_length,train,...} (the model card records the task).
    python -m stages.align simplification data/pairs/simplification data/tokenized/simplification \
        models/merged/simplification models/align-adapters/simplification models/aligned/simplification \
        metrics/simplification models/align-checkpoints/simplification
Trains a LoRA adapter (peft.*) over the merged SFT model on the pairs (medtune.alignment; the reference model is
the adapter switched off), with the task's training settings and `align.train` over them; checkpoints go to the last
folder (`persist: true`), so a killed run resumes. Then merges it, checking the logits as the merge stage does.
Writes the adapter, the aligned model with its tokenizer and card, metrics/<task>/align.json (losses, rewards,
pairs, the merge check), align_resources.json (time, memory) and the dvclive curves in metrics/<task>/align/live/.
"""

import argparse
import contextlib
from pathlib import Path

from medtune.alignment import train_dpo
from medtune.card import model_card
from medtune.config import align_max_length, align_train_config, load_params, task_config
from medtune.console import log, run_main
from medtune.io import atomic_dir, check_free_space, read_json, read_jsonl, write_json
from medtune.modeling import check_merge, load_tokenizer, merge_adapter, probe_sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    for name in ("pairs_dir", "tokenized_dir", "sft_dir", "adapter_dir", "out_dir", "metrics_dir", "checkpoints"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args()

    params = load_params()
    task, align = task_config(params, args.task), params.align
    train_pairs = read_jsonl(args.pairs_dir / "train.jsonl")
    eval_pairs = read_jsonl(args.pairs_dir / "validation.jsonl")
    log.info("Preference tuning %s on %d pairs (%d for validation)", args.sft_dir, len(train_pairs), len(eval_pairs))
    with contextlib.ExitStack() as stack:
        results, resources = train_dpo(
            sft_dir=args.sft_dir,
            tokenizer=load_tokenizer(args.sft_dir),
            train_pairs=train_pairs,
            eval_pairs=eval_pairs,
            system=task.system,
            template=task.prompt_template,
            peft=params.peft,
            train=align_train_config(params, args.task),
            lora_targets=params.model.lora_targets,
            beta=align.beta,
            losses=list(align.loss_type),
            max_length=align_max_length(params, args.task),
            seed=params.seed,
            adapter_dir=stack.enter_context(atomic_dir(args.adapter_dir)),
            live_dir=stack.enter_context(atomic_dir(args.metrics_dir / "align" / "live")),
            checkpoint_dir=args.checkpoints,
        )
    log.info(
        "Final validation loss %.4f: the chosen answer preferred on %.0f%% of the pairs, mean margin %.4f",
        results["eval_loss"],
        100 * results["eval_rewards/accuracies"],
        results["eval_rewards/margins"],
    )
    weights = sum(f.stat().st_size for f in args.sft_dir.glob("*.safetensors"))  # the aligned model is as large
    check_free_space(args.out_dir, weights, f"The aligned {args.task} model")
    probe = probe_sequences(args.tokenized_dir)
    merged, check = merge_adapter(args.sft_dir, args.adapter_dir, probe)
    check_merge(check, "Adapter vs merged", f"the aligned {args.task} model", "the adapter model", len(probe))
    results["merge"] = check
    with atomic_dir(args.out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(args.sft_dir).save_pretrained(tmp)
        train_metrics = read_json(args.metrics_dir / "train.json")
        (tmp / "README.md").write_text(model_card(args.task, params, train_metrics, None, alignment=results), "utf-8")
    write_json(args.metrics_dir / "align.json", results)
    write_json(args.metrics_dir / "align_resources.json", resources)


if __name__ == "__main__":
    run_main(main)
