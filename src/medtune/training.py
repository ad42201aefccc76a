"""LoRA fine-tuning on pre-tokenized `{"input_ids", "labels"}` examples, one trainer per kind of model head.

- `sft`: TRL's SFTTrainer on a causal LM. The tokenize stage already applied the chat template and masked
  the prompt, so trl only pads and batches.
- `token_classification`: transformers' Trainer on `AutoModelForTokenClassification` (a new `score` head on
  the same backbone), LoRA with `task_type=TOKEN_CLS` and the head trained in full (`modules_to_save`).

`peft.method=qlora` loads the frozen base through bitsandbytes (4-bit NF4 or 8-bit) and prepares it with peft's
`prepare_model_for_kbit_training`; the heads (`lm_head`, `score`) stay in full precision, as in the QLoRA paper.

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

# Model heads that bitsandbytes must leave in full precision (trained in full, or tied to the embeddings).
FULL_PRECISION_MODULES = ["lm_head", "score"]


def lora_config(peft: Any, targets: list[str], kind: str = "sft") -> Any:
    """peft's LoraConfig from `peft.*` and the model's `lora_targets`, for the task kind's model head."""
    from peft import LoraConfig

    head = {"task_type": "CAUSAL_LM"} if kind == "sft" else {"task_type": "TOKEN_CLS", "modules_to_save": ["score"]}
    return LoraConfig(r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout, target_modules=list(targets), **head)


def quantization_config(peft: Any) -> Any:
    """bitsandbytes settings for `peft.method=qlora`, None for plain LoRA."""
    if peft.method not in ("lora", "qlora"):
        raise ConfigError("peft.method", f"unknown method {peft.method!r}; use peft=lora or peft=qlora")
    if peft.method == "lora":
        if peft.quantization is not None:
            raise ConfigError("peft.quantization", "is only used with peft.method=qlora (select it with peft=qlora)")
        return None
    q = peft.quantization
    if q is None or q.bits not in (4, 8):
        raise ConfigError("peft.quantization.bits", "qlora needs 4 or 8 bits (see conf/peft/qlora.yaml)")
    try:
        import bitsandbytes  # noqa: F401  (fail here, with the fix, rather than deep inside from_pretrained)
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise ConfigError("peft.method", 'qlora needs bitsandbytes: pip install "medtune[qlora]"') from None
    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=FULL_PRECISION_MODULES)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
        llm_int8_skip_modules=FULL_PRECISION_MODULES,
    )


def load_base_for_training(kind: str, base_dir: Path, labels: list[str], peft: Any, train: Any, seed: int) -> Any:
    """The frozen base model for the task kind: fp32, or quantized and prepared for k-bit training (qlora)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    quantization = quantization_config(peft)
    if kind == "sft":
        model = AutoModelForCausalLM.from_pretrained(
            base_dir, dtype=torch.float32, quantization_config=quantization, trust_remote_code=False
        )
    else:
        model = load_token_classifier(base_dir, labels, seed, quantization_config=quantization)
    if quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train.gradient_checkpointing)
        _keep_4bit_layers_differentiable(model)
        log.info("Base weights quantized to %d bits: %.0f MB in memory", peft.quantization.bits, _mb(model))
    return model


def _keep_4bit_layers_differentiable(model: Any) -> None:
    """Stop bitsandbytes (0.50, on AVX512-BF16 CPUs) from repacking 4-bit weights for its inference kernel.

    It repacks a layer the first time it runs in eval mode without gradients (the trainer's evaluation), and the
    repacked kernel has no backward: every later training step would silently drop the gradient through the
    frozen base. tests/test_qlora.py compares gradients with a dequantized fp32 copy to catch this.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _mb(model: Any) -> float:
    return model.get_memory_footprint() / 2**20


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
    callbacks: list | None = None,
) -> dict:
    """Train a LoRA adapter for the task kind, save it to `adapter_dir`, log curves to `live_dir`.
    `callbacks` are extra transformers TrainerCallbacks (the benchmarks use one to measure memory).

    Returns the train metrics (final losses, runtime, tokens/s, trainable share, model memory, peak RSS).
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
    callbacks = [DVCLiveCallback(live=Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False)), *(callbacks or [])]
    args = training_args(train, seed, work_dir)
    model = load_base_for_training(kind, base_dir, labels, peft, train, seed)
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**args, max_length=max_length),
            train_dataset=datasets["train"],
            eval_dataset=datasets["eval"],
            processing_class=tokenizer,
            peft_config=lora_config(peft, lora_targets),
            callbacks=callbacks,
        )
    else:
        from peft import get_peft_model
        from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

        trainer = Trainer(
            model=get_peft_model(model, lora_config(peft, lora_targets, kind)),
            args=TrainingArguments(**args),
            train_dataset=datasets["train"],
            eval_dataset=datasets["eval"],
            data_collator=DataCollatorForTokenClassification(tokenizer),
            callbacks=callbacks,
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
        "model_memory_mb": round(_mb(trainer.model), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
