"""LoRA fine-tuning on pre-tokenized `{"input_ids", "labels"}` examples, one trainer per kind of model head.

- `sft`: TRL's SFTTrainer on a causal LM. The tokenize stage already applied the chat template and masked
  the prompt, so trl only pads and batches.
- `token_classification`: transformers' Trainer on `AutoModelForTokenClassification` (a new `score` head on
  the same backbone), LoRA with `task_type=TOKEN_CLS` and the head trained in full (`modules_to_save`).

dvclive records the loss curves through transformers' DVCLiveCallback (`report_to="dvclive"` would rewrite
dvc.yaml, so the callback is passed explicitly).
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Any

import torch

from medtune.errors import ConfigError
from medtune.modeling import device, load_token_classifier, load_tokenizer

log = logging.getLogger(__name__)


def lora_config(peft: Any, targets: list[str], kind: str = "sft") -> Any:
    """peft's LoraConfig from `peft.*` and the model's `lora_targets`, for the task kind's model head."""
    from peft import LoraConfig

    if peft.method != "lora":
        raise ConfigError("peft.method", f"{peft.method!r} is not available yet; use peft=lora")
    head = {"task_type": "CAUSAL_LM"} if kind == "sft" else {"task_type": "TOKEN_CLS", "modules_to_save": ["score"]}
    return LoraConfig(r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout, target_modules=list(targets), **head)


def training_args(train: Any, seed: int, output_dir: Path) -> dict:
    """TrainingArguments shared by both trainers (SFTConfig is a subclass of TrainingArguments)."""
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        learning_rate=train.lr,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        bf16=train.bf16,
        activation_checkpointing=train.gradient_checkpointing,
        logging_steps=train.logging_steps,
        eval_strategy="steps",
        eval_steps=train.eval_steps,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=device().type != "cuda",
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=False,
    )


def train_adapter(
    *,
    kind: str,
    base_dir: Path,
    train_examples: list[dict],
    eval_examples: list[dict],
    peft: Any,
    train: Any,
    lora_targets: list[str],
    max_length: int,
    labels: list[str],
    seed: int,
    adapter_dir: Path,
    live_dir: Path,
    work_dir: Path,
) -> dict:
    """Train a LoRA adapter for the task kind, save it to `adapter_dir`, log curves to `live_dir`.

    Returns the train metrics (final losses, runtime, tokens/s, trainable share, peak RSS).
    """
    from datasets import Dataset
    from dvclive import Live
    from transformers import set_seed
    from transformers.integrations import DVCLiveCallback

    set_seed(seed)  # before the model exists, so LoRA (and head) init is reproducible
    tokenizer = load_tokenizer(base_dir)
    datasets = {
        name: Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
        for name, examples in (("train", train_examples), ("eval", eval_examples))
    }
    callback = DVCLiveCallback(live=Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False))
    args = training_args(train, seed, work_dir)
    if kind == "sft":
        from transformers import AutoModelForCausalLM
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, trust_remote_code=False),
            args=SFTConfig(**args, max_length=max_length),
            train_dataset=datasets["train"],
            eval_dataset=datasets["eval"],
            processing_class=tokenizer,
            peft_config=lora_config(peft, lora_targets),
            callbacks=[callback],
        )
    else:
        from peft import get_peft_model
        from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

        model = get_peft_model(load_token_classifier(base_dir, labels, seed), lora_config(peft, lora_targets, kind))
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**args),
            train_dataset=datasets["train"],
            eval_dataset=datasets["eval"],
            data_collator=DataCollatorForTokenClassification(tokenizer),
            callbacks=[callback],
        )
    return _train_and_save(trainer, adapter_dir)


def _train_and_save(trainer: Any, adapter_dir: Path) -> dict:
    trainable, total = trainer.model.get_nb_trainable_parameters()
    log.info("Training %d of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    start = time.perf_counter()
    result = trainer.train()
    runtime = time.perf_counter() - start
    final_eval = trainer.evaluate()
    trainer.model.save_pretrained(adapter_dir, safe_serialization=True)
    train_logs = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "train_loss_final": train_logs[-1] if train_logs else result.training_loss,
        "train_loss_mean": result.training_loss,
        "eval_loss": final_eval["eval_loss"],
        "steps": trainer.state.global_step,
        "runtime_s": round(runtime, 2),
        "train_tokens_per_s": round(trainer.state.num_input_tokens_seen / runtime, 1),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
