"""Preference tuning with TRL's DPOTrainer: a LoRA adapter over a task's merged SFT model, trained on
`{"prompt", "chosen", "rejected"}` pairs (medtune.preference builds them, or the user gives them).

Why TRL here and transformers' Trainer for SFT: a preference loss needs each pair's two answers scored by the
policy and by a frozen reference, which DPOTrainer does (with its losses: DPO's sigmoid, IPO, hinge, ... one
setting, `align.loss_type`); SFT has no such need and trains ~2x faster on our CPUs without TRL (medtune.training).
The reference model costs no memory: DPOTrainer wraps the SFT model in the LoRA adapter itself (`peft_config`) and
scores the reference with the adapter switched off, the same weights.

The pairs go in TRL's conversational form: the prompt as the task's chat turns (its system prompt and prompt
template, as tokenize renders SFT examples), each answer as the assistant's turn, so the chat template closes the
answers exactly as SFT taught the model.

Everything the SFT run guarantees holds here through the same pieces (medtune.training, medtune.checkpoints):
resumable checkpoints with a fingerprint, a stop at the first non-finite loss or weight, dvclive curves from the log
history (rewards, margins and losses among them), results kept apart from wall-clock resources.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medtune import checkpoints
from medtune.config import PeftConfig, TrainConfig
from medtune.data import sample_records
from medtune.tasks import prompt_messages
from medtune.training import (
    LogLastStep,
    StopOnNonFinite,
    load_base_for_training,
    lora_config,
    plain,
    skip_autocast_copies,
    steps_per_epoch,
    train_and_save,
    training_args,
    write_curves,
)

log = logging.getLogger(__name__)

# The DPO metrics kept in align.json besides the losses (TRL's names, `eval_` for the validation pairs).
REWARD_METRICS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


def conversation(pair: dict, system: str, template: str) -> dict:
    """One pair in TRL's conversational preference format: the task's turns before the answer (a pair's own
    `system` wins over the task's, as for SFT records), then each answer as the assistant's turn."""
    return {
        "prompt": prompt_messages(pair, system, template),
        "chosen": [{"role": "assistant", "content": pair["chosen"]}],
        "rejected": [{"role": "assistant", "content": pair["rejected"]}],
    }


def dpo_args(
    train: TrainConfig, seed: int, output_dir: Path, epoch_steps: int, beta: float, losses: list[str], max_length: int
) -> Any:
    """TRL's DPOConfig: medtune's training arguments (medtune.training.training_args) plus the preference loss.
    Batches are drawn in random order (seeded per epoch): length grouping needs an `input_ids` column, which a pair
    does not have. The reference log-probabilities are computed with each batch (the adapter off), so a resumed run
    needs nothing precomputed."""
    from trl import DPOConfig

    args = training_args(train, seed, output_dir, epoch_steps)
    args["train_sampling_strategy"] = "random"
    return DPOConfig(
        **args,
        beta=beta,
        loss_type=list(losses),
        max_length=max_length,
        precompute_ref_log_probs=False,
        dataset_num_proc=None,
    )


def train_dpo(
    *,
    sft_dir: Path,
    tokenizer: Any,
    train_pairs: list[dict],
    eval_pairs: list[dict],
    system: str,
    template: str,
    peft: PeftConfig,
    train: TrainConfig,
    lora_targets: list[str],
    beta: float,
    losses: list[str],
    max_length: int,
    seed: int,
    adapter_dir: Path,
    live_dir: Path,
    checkpoint_dir: Path,
    callbacks: list | None = None,
) -> tuple[dict, dict]:
    """Train the preference adapter over the SFT model in `sft_dir`, save it to `adapter_dir`, write its curves to
    `live_dir`; checkpoint to `checkpoint_dir` and resume from it (a run killed in the middle ends with the same
    adapter). Validation is on a seeded sample of `train.eval_max_examples` pairs. Returns (results, resources) as
    medtune.training.train_adapter does, the results with the final validation rewards."""
    from datasets import Dataset
    from trl import DPOTrainer

    validation = sample_records(eval_pairs, train.eval_max_examples, seed)
    inputs = {"peft": peft, "train": train, "targets": lora_targets, "beta": beta, "losses": losses, "seed": seed}
    inputs |= {"max_length": max_length, "system": system, "template": template}
    inputs = {**plain(inputs), "train_pairs": train_pairs, "eval_pairs": validation}
    run = checkpoints.Run(checkpoint_dir, inputs, sft_dir)
    model = load_base_for_training("sft", sft_dir, [], peft, train, seed)
    epoch_steps = steps_per_epoch(len(train_pairs), train.batch_size, train.grad_accum)
    trainer = DPOTrainer(
        model=model,
        args=dpo_args(train, seed, checkpoint_dir, epoch_steps, beta, losses, max_length),
        train_dataset=Dataset.from_list([conversation(p, system, template) for p in train_pairs]),
        eval_dataset=Dataset.from_list([conversation(p, system, template) for p in validation]),
        processing_class=tokenizer,
        peft_config=lora_config(peft, lora_targets),  # TRL wraps the model itself: the reference is the adapter off
        callbacks=[
            LogLastStep(),
            StopOnNonFinite("align.train.lr"),
            run.callback,
            *(callbacks or []),
        ],
    )
    if train.bf16 and peft.method == "lora" and not peft.use_dora:
        log.info("LoRA layers set to skip repeated autocast casts: %d", skip_autocast_copies(trainer.model))
    results, resources, final_eval = train_and_save(trainer, adapter_dir, run.resume)
    results |= {f"eval_{m}": final_eval[f"eval_{m}"] for m in REWARD_METRICS}
    results |= {"pairs": len(train_pairs), "validation_pairs": len(validation)}
    write_curves(trainer.state.log_history, live_dir)
    run.finish()
    return results, resources
