"""Stage `train@<task>`: LoRA fine-tuning of the base model on the tokenized train split.

sft tasks train the causal LM with TRL's SFTTrainer; token_classification tasks train a new `score` head and
LoRA on the backbone with transformers' Trainer.
Reads params: seed, peft, train, model.lora_targets, tasks.<task>.{kind,max_length,labels,train}.
    python -m stages.train qa data/tokenized/qa models/base/smollm2-135m models/adapters/qa metrics/qa
Writes the adapter (safetensors), metrics/<task>/train.json and the dvclive loss curves in metrics/<task>/live/.
"""

import argparse
import tempfile
from pathlib import Path

from medtune.config import load_params, task_config, train_config
from medtune.console import log, run_main
from medtune.io import atomic_dir, read_jsonl, write_json
from medtune.training import train_adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("tokenized_dir", type=Path)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("adapter_dir", type=Path)
    parser.add_argument("metrics_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    task = task_config(params, args.task)
    train_examples = read_jsonl(args.tokenized_dir / "train.jsonl")
    eval_examples = read_jsonl(args.tokenized_dir / "validation.jsonl")
    log.info(
        "Fine-tuning %s on %d examples (%d for validation)", args.base_dir, len(train_examples), len(eval_examples)
    )
    with (
        atomic_dir(args.adapter_dir) as adapter_tmp,
        atomic_dir(args.metrics_dir / "live") as live_tmp,
        tempfile.TemporaryDirectory() as work_dir,
    ):
        metrics = train_adapter(
            kind=task.kind,
            base_dir=args.base_dir,
            train_examples=train_examples,
            eval_examples=eval_examples,
            peft=params.peft,
            train=train_config(params, args.task),
            lora_targets=params.model.lora_targets,
            max_length=task.max_length,
            labels=list(task.labels),
            seed=params.seed,
            adapter_dir=adapter_tmp,
            live_dir=live_tmp,
            work_dir=Path(work_dir),
        )
    write_json(args.metrics_dir / "train.json", metrics)
    log.info(
        "Final train loss %.4f, eval loss %.4f, %.0f tokens/s",
        metrics["train_loss_final"],
        metrics["eval_loss"],
        metrics["train_tokens_per_s"],
    )


if __name__ == "__main__":
    run_main(main)
