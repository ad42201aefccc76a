"""Stage `train@<task>`: LoRA fine-tuning of the base model on the tokenized train split.

One transformers Trainer for both kinds: sft tasks train the causal LM on the response tokens, token_classification
tasks a new `score` head plus LoRA on the backbone.
Reads params: seed, peft, train, model.lora_targets, tasks.<task>.{kind,labels,train}.
    python -m stages.train qa data/tokenized/qa models/base/smollm2-135m models/adapters/qa metrics/qa \
        models/checkpoints/qa
Writes the adapter (safetensors), metrics/<task>/train.json (results), train_resources.json (time, memory),
train_machine.json (the hardware and library versions of those timings) and the dvclive loss curves in
metrics/<task>/live/. Checkpoints go to the last folder (`persist: true` in dvc.yaml): a run that was killed resumes
from there.
With `train.launcher=accelerate` the stage starts itself again under `accelerate launch` (DDP, FSDP); every
process trains its share of each batch and the first one writes the outputs.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from medtune.checkpoints import is_main_process
from medtune.config import load_params, task_config, train_config
from medtune.console import log, run_main
from medtune.errors import ConfigError
from medtune.io import atomic_dir, read_jsonl, write_json
from medtune.machine import describe
from medtune.training import train_adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("tokenized_dir", type=Path)
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("adapter_dir", type=Path)
    parser.add_argument("metrics_dir", type=Path)
    parser.add_argument("checkpoint_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    task, train = task_config(params, args.task), train_config(params, args.task)
    if train.launcher == "accelerate" and "LOCAL_RANK" not in os.environ:
        sys.exit(relaunch_with_accelerate(train.accelerate_config))
    train_examples = read_jsonl(args.tokenized_dir / "train.jsonl")
    eval_examples = read_jsonl(args.tokenized_dir / "validation.jsonl")
    log.info(
        "Fine-tuning %s on %d examples (%d for validation)", args.base_dir, len(train_examples), len(eval_examples)
    )
    with contextlib.ExitStack() as stack:
        results, resources = train_adapter(
            kind=task.kind,
            base_dir=args.base_dir,
            train_examples=train_examples,
            eval_examples=eval_examples,
            peft=params.peft,
            train=train,
            lora_targets=params.model.lora_targets,
            labels=list(task.labels),
            seed=params.seed,
            adapter_dir=output_dir(stack, args.adapter_dir),
            live_dir=output_dir(stack, args.metrics_dir / "live"),
            work_dir=scratch(stack),
            checkpoint_dir=args.checkpoint_dir,
            attention=task.attention,
        )
    if is_main_process():
        write_json(args.metrics_dir / "train.json", results)
        write_json(args.metrics_dir / "train_resources.json", resources)
        write_json(args.metrics_dir / "train_machine.json", describe())
        log.info(
            "Final train loss %.4f, eval loss %.4f, %.0f tokens/s",
            results["train_loss_final"],
            results["eval_loss"],
            resources["train_tokens_per_s"],
        )


def output_dir(stack: contextlib.ExitStack, path: Path) -> Path:
    """Where this process writes the output folder `path`: process 0 writes `path` itself, in place only once the
    stage succeeds (atomic_dir); any other process of `accelerate launch` writes a scratch copy that is dropped."""
    return stack.enter_context(atomic_dir(path)) if is_main_process() else scratch(stack)


def scratch(stack: contextlib.ExitStack) -> Path:
    return Path(stack.enter_context(tempfile.TemporaryDirectory()))


def relaunch_with_accelerate(config_file: str) -> int:
    """Run this same command under `accelerate launch`; returns its exit status."""
    if not Path(config_file).is_file():
        raise ConfigError("train.accelerate_config", f"{config_file} not found (see conf/accelerate/)")
    command = ["accelerate", "launch", "--config_file", config_file, "-m", "stages.train", *sys.argv[1:]]
    log.info("Starting the training processes: %s", " ".join(command))
    return subprocess.run(command).returncode


if __name__ == "__main__":
    run_main(main)
