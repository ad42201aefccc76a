"""LoRA supervised fine-tuning with TRL's SFTTrainer on pre-tokenized `{"input_ids", "labels"}` examples.

The tokenize stage already applied the chat template and masked the prompt, so trl only pads and batches.
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
from medtune.modeling import device

log = logging.getLogger(__name__)


def lora_config(peft: Any, targets: list[str]) -> Any:
    """peft's LoraConfig from `peft.*` and the model's `lora_targets`."""
    from peft import LoraConfig

    if peft.method != "lora":
        raise ConfigError("peft.method", f"{peft.method!r} is not available yet; use peft=lora")
    return LoraConfig(
        r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout, target_modules=list(targets), task_type="CAUSAL_LM"
    )


def sft_config(train: Any, max_length: int, seed: int, output_dir: Path) -> Any:
    from trl import SFTConfig

    on_gpu = device().type == "cuda"
    return SFTConfig(
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
        max_length=max_length,
        logging_steps=train.logging_steps,
        eval_strategy="steps",
        eval_steps=train.eval_steps,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=False,
    )


def train_sft(
    *,
    base_dir: Path,
    train_examples: list[dict],
    eval_examples: list[dict],
    peft: Any,
    train: Any,
    lora_targets: list[str],
    max_length: int,
    seed: int,
    adapter_dir: Path,
    live_dir: Path,
    work_dir: Path,
) -> dict:
    """Train a LoRA adapter, save it to `adapter_dir`, log curves to `live_dir`; return the train metrics."""
    from datasets import Dataset
    from dvclive import Live
    from transformers import AutoModelForCausalLM, set_seed
    from transformers.integrations import DVCLiveCallback
    from trl import SFTTrainer

    from medtune.modeling import load_tokenizer

    set_seed(seed)  # before the model exists, so LoRA init is reproducible
    tokenizer = load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, trust_remote_code=False)
    columns = ["input_ids", "labels"]
    trainer = SFTTrainer(
        model=model,
        args=sft_config(train, max_length, seed, work_dir),
        train_dataset=Dataset.from_list([{k: e[k] for k in columns} for e in train_examples]),
        eval_dataset=Dataset.from_list([{k: e[k] for k in columns} for e in eval_examples]),
        processing_class=tokenizer,
        peft_config=lora_config(peft, lora_targets),
        callbacks=[DVCLiveCallback(live=Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False))],
    )
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
