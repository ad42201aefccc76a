"""LoRA fine-tuning on pre-tokenized `{"input_ids", "labels"}` examples with transformers' Trainer.

One code path for both kinds of model head; only the model class and the loss differ:
- `sft`: the causal LM. The tokenize stage already applied the chat template and masked the prompt
  (completion-only loss); `completion_loss` scores the response tokens only.
- `token_classification`: `AutoModelForTokenClassification` (a new `score` head on the same backbone), LoRA with
  `task_type=TOKEN_CLS` and the head trained in full (`modules_to_save`); the model's own per-token loss.

The LM head runs only where it matters: `logits_to_keep` limits it (and the loss) to the positions that predict a
response token, which spares SmolLM2's 49k-word head over the prompt. Why not trl's SFTTrainer (which the earlier
version used): off CUDA its fused LM head scores every position, prompt and padding included, and computes entropy
and accuracy for logging, ~45% of a CPU step (torch profiler, SmolLM2, qa, batch 8).
Batches are padded to their longest example by default; `train.padding_free` concatenates them into one row instead
(see `make_batch`, and docs/config-choices.md for why padding won on the CPUs measured).
`benchmarks/train_throughput.py` measures the whole recipe against the seed notebooks'.

`peft.method=qlora` loads the frozen base through bitsandbytes (4-bit NF4 or 8-bit) and prepares it with peft's
`prepare_model_for_kbit_training`; the heads (`lm_head`, `score`) stay in full precision, as in the QLoRA paper.

Long runs survive a kill: with a `checkpoint_dir` the Trainer checkpoints every `train.checkpoint_steps` (steps, or a
fraction of an epoch: `interval_steps`) and a rerun resumes from the last complete checkpoint (medtune.checkpoints),
ending with the same adapter. A loss or weight that stops being finite ends training at once with the step and the
likely cause (`StopOnNonFinite`).

The loss curves are written with dvclive at the end, from the Trainer's log history rather than live through
transformers' DVCLiveCallback: the history is part of every checkpoint, so a resumed run still writes the whole
curve, and leaving out the wall-clock entries (runtime, samples/s) makes the files reproducible byte for byte.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from medtune import checkpoints
from medtune.config import PeftConfig, TrainConfig
from medtune.data import sample_records
from medtune.errors import ConfigError, TrainingError
from medtune.generation import response_nll, target_positions
from medtune.io import read_json, write_json
from medtune.modeling import SAFE_LOADING, device, load_token_classifier
from medtune.tasks import IGNORE_INDEX

log = logging.getLogger(__name__)

# Model heads that bitsandbytes must leave in full precision (trained in full, or tied to the embeddings).
FULL_PRECISION_MODULES = ["lm_head", "score"]


def lora_config(peft: PeftConfig, targets: list[str], kind: str = "sft") -> Any:
    """peft's LoraConfig from `peft.*` and the model's `lora_targets`, for the task kind's model head."""
    from peft import LoraConfig

    head = {"task_type": "CAUSAL_LM"} if kind == "sft" else {"task_type": "TOKEN_CLS", "modules_to_save": ["score"]}
    return LoraConfig(
        r=peft.r,
        lora_alpha=peft.alpha,
        lora_dropout=peft.dropout,
        use_dora=peft.use_dora,
        target_modules=list(targets),
        **head,
    )


def quantization_config(peft: PeftConfig) -> Any:
    """bitsandbytes settings for `peft.method=qlora`, None for plain LoRA (medtune.checks: only qlora has them)."""
    q = peft.quantization
    if q is None:
        return None
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


def load_base_for_training(
    kind: str,
    base_dir: Path,
    labels: list[str],
    peft: PeftConfig,
    train: TrainConfig,
    seed: int,
    attention: str = "causal",
) -> Any:
    """The frozen base model for the task kind: in the dtype models/base stores (`model.weights.dtype`: fp32 for
    SmolLM2, bf16 for the 7B-12B hub models, which would not fit a 24 GB GPU in fp32), or quantized and prepared
    for k-bit training (qlora). A token classifier's new head trains in full, so it is fp32 whatever the base;
    its backbone attends as `attention` (`tasks.<task>.attention`) says."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    load = {"quantization_config": quantization_config(peft), "attn_implementation": train.attn_implementation}
    dtype = torch.float32 if peft.method == "full" else "auto"  # trained weights keep fp32 master copies
    if kind == "sft":
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype, **load, **SAFE_LOADING)
    else:
        model = load_token_classifier(base_dir, labels, seed, dtype=dtype, attention=attention, **load)
        model.score.float()
    if load["quantization_config"] is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train.gradient_checkpointing)
        _keep_4bit_layers_differentiable(model)
        log.info("Base weights quantized to %d bits: %.0f MB in memory", peft.quantization.bits, _mb(model))
    return model


def trainable_model(
    kind: str,
    base_dir: Path,
    labels: list[str],
    peft: PeftConfig,
    train: TrainConfig,
    lora_targets: list[str],
    seed: int,
    attention: str = "causal",
) -> Any:
    """The model the Trainer trains: the frozen base with LoRA (or DoRA) on `lora_targets`, set up as `train` says;
    with peft=full the whole model in fp32, every weight trained. The autocast shortcut is left out for DoRA, whose
    magnitude is computed from the frozen weights themselves."""
    from peft import get_peft_model

    model = load_base_for_training(kind, base_dir, labels, peft, train, seed, attention)
    if peft.method == "full":
        return model
    model = get_peft_model(model, lora_config(peft, lora_targets, kind))
    if train.bf16 and peft.method == "lora" and not peft.use_dora:
        log.info("LoRA layers set to skip repeated autocast casts: %d", skip_autocast_copies(model))
    if train.gradient_checkpointing and peft.method == "lora":
        model.enable_input_require_grads()  # the frozen embeddings' output must carry gradients into checkpoints
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


def steps_per_epoch(examples: int, batch_size: int, grad_accum: int, processes: int = 1) -> int:
    """Optimizer steps in one epoch, counted as the Trainer counts them: each of `processes` takes `batch_size`
    examples a batch (the last batch may be short) and an epoch's last step may accumulate fewer batches."""
    batches = math.ceil(examples / (batch_size * processes))
    return max(math.ceil(batches / grad_accum), 1)


def interval_steps(every: float, epoch_steps: int, multiple_of: int = 1) -> int:
    """`train.eval_steps` or `train.checkpoint_steps` in optimizer steps. A whole number is a step count, used as
    it is. A fraction (< 1) is a share of an epoch, so one setting suits 300 records and 30,000: rounded up to a
    multiple of `multiple_of`, at least one (checkpoints pass logging_steps: a resumed run then logs the same loss
    curve, see medtune.config). transformers would read the fraction as a share of the whole run instead."""
    if every >= 1:
        return int(every)
    steps = math.ceil(round(every * epoch_steps, 6))  # 0.14 * 50 steps is 7.000000000000001: 7, not 8
    return max(math.ceil(steps / multiple_of), 1) * multiple_of


def training_args(train: TrainConfig, seed: int, output_dir: Path, epoch_steps: int) -> dict:
    """transformers TrainingArguments from the `train` config; `epoch_steps` (optimizer steps per epoch) turns the
    fractions of an epoch in eval_steps and checkpoint_steps into steps."""
    saves = train.checkpoint_steps > 0
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
        eval_steps=interval_steps(train.eval_steps, epoch_steps),
        save_strategy="steps" if saves else "no",
        save_steps=interval_steps(train.checkpoint_steps, epoch_steps, train.logging_steps) if saves else 1,
        save_total_limit=2,  # the newest may be a partial save when a run is killed; the one before is whole
        logging_nan_inf_filter=False,  # the default would hide a nan loss behind the mean of the others
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=device().type != "cuda",
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        disable_tqdm=False,
        torch_compile=train.torch_compile,
    )


def make_batch(examples: list[dict], causal: bool, padding_free: bool) -> dict[str, Any]:
    """One training batch, padded (the default) or padding-free (`train.padding_free`).

    Padded: each example a row, right-padded to the batch's longest, with an attention mask.
    Padding-free: the examples concatenated into one row with `position_ids` restarting at 0 for each, which
    transformers turns into a block-diagonal causal mask (no example sees another: tests/test_training.py).
    Not transformers' DataCollatorWithFlattening: it sets every example's first label to -100. For sft that is
    what `_labels` does (its batches are the same tensors), but a token-classification example starts with a word
    (tokenize_tagged adds no BOS token and starts each window at a word), whose tag it would drop from training.
    Either way `use_cache=False`: the packed mask needs it, and training never reads a KV cache.
    For a causal LM, `logits_to_keep` limits the LM head to the positions that predict a response token.
    """
    if padding_free:
        batch = {
            "input_ids": torch.tensor([[t for e in examples for t in e["input_ids"]]]),
            # a causal LM ignores each example's first label: it would be predicted from the previous example
            "labels": torch.tensor([[t for e in examples for t in _labels(e, causal)]]),
            "position_ids": torch.tensor([[i for e in examples for i in range(len(e["input_ids"]))]]),
        }
    else:
        longest = max(len(e["input_ids"]) for e in examples)
        batch = {
            "input_ids": torch.tensor([_pad(e["input_ids"], longest, 0) for e in examples]),
            "labels": torch.tensor([_pad(e["labels"], longest, IGNORE_INDEX) for e in examples]),
            "attention_mask": torch.tensor([_pad([1] * len(e["input_ids"]), longest, 0) for e in examples]),
        }
    batch["use_cache"] = False
    if causal:
        batch["logits_to_keep"] = target_positions(batch["labels"])
    return batch


def _labels(example: dict, causal: bool) -> list[int]:
    return [IGNORE_INDEX, *example["labels"][1:]] if causal else example["labels"]


def _pad(values: list[int], length: int, fill: int) -> list[int]:
    return values + [fill] * (length - len(values))


def completion_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Mean cross-entropy of the response tokens, from the logits at `target_positions` only.

    `num_items_in_batch` (the targets of all accumulated micro-batches, counted by the Trainer) makes gradient
    accumulation weigh every token the same, as one large batch would.
    """
    loss, labelled = response_nll(outputs.logits, labels)
    return loss / (num_items_in_batch if num_items_in_batch is not None else labelled.sum().clamp(min=1))


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped order, drawn for each epoch from a generator seeded with (seed, epoch).

    transformers' own sampler draws each epoch's order from the global RNG, and a run resumed in the middle of an
    epoch restores that RNG only after the epoch's order was drawn: resumed after the first epoch, it trained on
    other batches than the run it resumed (tests/test_faults.py kills a run in its second epoch). Accelerate calls
    `set_epoch` at the start of every epoch, so here the order of epoch e is the same in every run."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return super().__iter__()


class EpochSeededTrainer(Trainer):
    """transformers' Trainer with EpochSeededLengthGroupedSampler for `train.group_by_length` (the random order of
    `group_by_length: false` is already seeded per epoch by accelerate)."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return EpochSeededLengthGroupedSampler(batch, [len(e["input_ids"]) for e in dataset], self.args.seed)


class LogLastStep(TrainerCallback):
    """Log the training loss at the last step too, so its curve always exists (a short run, such as
    `train.max_steps=2` with `logging_steps=5`, would otherwise write none and DVC would miss the plot).
    The validation curve needs no help: `train_and_save` evaluates once more after training."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control


class StopOnNonFinite(TrainerCallback):
    """Stop at the first step whose update leaves a trainable weight nan or infinite (a nan loss makes nan
    gradients, and the optimizer writes them into the weights in the same step), or whose logged loss is not finite.
    Checking the trainable weights costs ~1 ms a step for LoRA; without it a diverged run trains on to the end and
    saves a nan adapter. `lr_key` is the setting the error tells the user to lower."""

    def __init__(self, lr_key: str = "train.lr") -> None:
        self.lr_key = lr_key

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if model is not None and not all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad):
            what = f"step {state.global_step}: the update made trainable weights nan or infinite"
            self._stop(what, args.learning_rate)
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
        for key in ("loss", "grad_norm", "eval_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                self._stop(f"step {state.global_step}: the {key.replace('_', ' ')} is {value}", args.learning_rate)
        return control

    def _stop(self, what: str, lr: float) -> None:
        raise TrainingError(
            f"{what}. Likely cause: the learning rate ({lr:g}) is too high for this model and data; "
            f"lower {self.lr_key} or add warmup (train.warmup_steps). Less likely: fp16 overflow "
            "(use bf16), or an example whose labels are all masked."
        )


def skip_autocast_copies(model: Any) -> int:
    """Spare bf16 autocast the casts it would repeat on every call (with `train.bf16`). Returns the layers changed.

    - The frozen projection weights under LoRA are stored in bf16: autocast caches a cast only for weights that
      require grad, so it would cast each frozen fp32 weight again for every matmul.
    - peft's LoRA layers take their input as it comes instead of casting it to the fp32 of the LoRA matrices first:
      autocast casts it straight back to bf16 for the matmul, and the backward pass undoes both casts again. This
      holds for a base stored in bf16 too (the 7B-12B models), where the cast was an fp32 copy of every input.
    Neither changes a number (the losses are bit-identical, tests/test_training.py); measured on SmolLM2 (CPU,
    qa, batch 8): 2-3% faster and 40% less model memory for the first, ~7% faster for the second.
    Embeddings and norms stay fp32 (SmolLM2's LM head shares the embedding matrix).
    """
    from peft.tuners.lora import LoraLayer

    changed = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = False
            base = module.get_base_layer()
            if isinstance(base, torch.nn.Linear) and base.weight.dtype == torch.float32:
                base.to(torch.bfloat16)
            changed += 1
    return changed


def write_curves(log_history: list[dict], live_dir: Path) -> None:
    """The logged losses, learning rate and gradient norm as dvclive curves, x = the training step.
    Left out: wall-clock entries (runtime, samples per second), which differ on every run, and the Trainer's
    `train_loss`, the mean over the steps this process ran (after a resume, only the steps since the checkpoint).
    Keys in sorted order: a checkpoint stores its history sorted, and the files must not depend on a resume."""
    from dvclive import Live
    from dvclive.utils import standardize_metric_name

    live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False)
    for entry in log_history:
        live.step = entry["step"]
        for key, value in sorted(entry.items()):
            if key not in ("step", "train_loss") and not key.endswith(("runtime", "per_second")):
                live.log_metric(standardize_metric_name(key, "dvclive.huggingface"), value)
    live.end()


def train_adapter(
    *,
    kind: str,
    base_dir: Path,
    train_examples: list[dict],
    eval_examples: list[dict],
    peft: PeftConfig,
    train: TrainConfig,
    lora_targets: list[str],
    labels: list[str],
    seed: int,
    adapter_dir: Path,
    live_dir: Path,
    work_dir: Path,
    checkpoint_dir: Path | None = None,
    callbacks: list | None = None,
    attention: str = "causal",
) -> tuple[dict, dict]:
    """Train a LoRA adapter for the task kind, save it to `adapter_dir`, write its curves to `live_dir`.
    With a `checkpoint_dir`, checkpoint there and resume from it (see medtune.checkpoints); else `work_dir` is
    the Trainer's scratch folder. `callbacks` are extra TrainerCallbacks (the benchmarks use one to measure memory).

    Validation, during training and after it (`eval_loss`), is on a seeded sample of `train.eval_max_examples` of
    `eval_examples` (all when null), in their order, so that a validation split of thousands does not cost more
    than the training itself: drawn as prepare draws `data.max_records` (`data.sample_records`).

    Returns the results (losses, steps, parameter counts: a pure function of the inputs) and the resources
    (wall-clock time, tokens/s, memory: different on every run), kept apart so the results reproduce byte for byte.
    """
    from transformers import TrainingArguments, set_seed

    validation = sample_records(eval_examples, train.eval_max_examples, seed)
    if len(validation) < len(eval_examples):
        log.info("Validating on %d of %d examples (train.eval_max_examples)", len(validation), len(eval_examples))
    run = None
    if checkpoint_dir:  # the fingerprint reads every base model file: only a resumable run needs it
        inputs = {"kind": kind, "peft": peft, "train": train, "targets": lora_targets, "labels": labels, "seed": seed}
        inputs["attention"] = attention
        inputs = {**plain(inputs), "train_examples": train_examples, "eval_examples": validation}
        run = checkpoints.Run(checkpoint_dir, inputs, base_dir)
    set_seed(seed)  # before the model exists, so LoRA (and head) init is reproducible
    causal = kind == "sft"
    model = trainable_model(kind, base_dir, labels, peft, train, lora_targets, seed, attention)
    own_callbacks = [LogLastStep(), StopOnNonFinite(), *([run.callback] if run else [])]
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by `accelerate launch`: each process takes its batches
    epoch_steps = steps_per_epoch(len(train_examples), train.batch_size, train.grad_accum, processes)
    trainer = EpochSeededTrainer(
        model=model,
        args=TrainingArguments(**training_args(train, seed, checkpoint_dir or work_dir, epoch_steps)),
        train_dataset=[{"input_ids": e["input_ids"], "labels": e["labels"]} for e in train_examples],
        eval_dataset=[{"input_ids": e["input_ids"], "labels": e["labels"]} for e in validation],
        data_collator=functools.partial(make_batch, causal=causal, padding_free=train.padding_free),
        compute_loss_func=completion_loss if causal else None,
        callbacks=[*own_callbacks, *(callbacks or [])],
    )
    results, resources, _ = train_and_save(trainer, adapter_dir, run and run.resume)
    if trainer.is_world_process_zero():
        write_curves(trainer.state.log_history, live_dir)
        if run:
            run.finish()
    return results, resources


def plain(config: dict) -> dict:
    """The inputs with OmegaConf nodes as plain values, for the run's fingerprint."""
    from omegaconf import OmegaConf

    return {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in config.items()}


def save_adapter(model: Any, adapter_dir: Path) -> None:
    """peft's save_pretrained, with the module lists of adapter_config.json sorted: peft holds them as sets, whose
    order changes from one process to the next (string hashing is randomised), so the file would differ per run.
    A fully fine-tuned model (no adapter) is saved whole, as transformers saves any model."""
    model.save_pretrained(adapter_dir, safe_serialization=True)
    if not (adapter_dir / "adapter_config.json").is_file():
        return
    config = read_json(adapter_dir / "adapter_config.json")
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    write_json(adapter_dir / "adapter_config.json", config)


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trained, all) parameters; peft's own count for an adapter model (it counts 4-bit weights unpacked)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


def train_and_save(trainer: Any, adapter_dir: Path, resume: Path | None) -> tuple[dict, dict, dict]:
    """Train (resuming from `resume`), evaluate once more, save the adapter: (results, resources, final evaluation)."""
    trainable, total = parameter_counts(trainer.model)
    log.info("Training %d of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    tokens_before = read_json(resume / "trainer_state.json")["num_input_tokens_seen"] if resume else 0
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    runtime = time.perf_counter() - start
    final_eval = trainer.evaluate()
    save_adapter(trainer.model, adapter_dir)
    train_logs = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    results = {
        "train_loss_final": train_logs[-1],
        "eval_loss": final_eval["eval_loss"],
        "steps": trainer.state.global_step,
        "processes": trainer.args.world_size,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total,
    }
    resources = {  # of this process's run only: after a resume, from the checkpoint on
        "runtime_s": round(runtime, 2),
        "resumed_from_step": int(resume.name.removeprefix(checkpoints.PREFIX)) if resume else 0,
        "train_tokens_per_s": round((trainer.state.num_input_tokens_seen - tokens_before) / runtime, 1),
        "model_memory_mb": round(_mb(trainer.model), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    return results, resources, final_eval
