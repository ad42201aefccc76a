"""Benchmark for a machine with a CUDA GPU: medtune's training on a random-weight model of a conf/model shape.

    python benchmarks/gpu_training.py --params gpu_params.yaml --steps 20      # a composed params file, e.g.
    python -c "from medtune.config import compose_params as c; c('.', ['model=mistral-7b-instruct-v0.3', \
        'train=gpu', 'train.max_length=512'], out='gpu_params.yaml')"
    python benchmarks/gpu_training.py --params <tiny-random params> --steps 3  # smoke test (runs on CPU too)

No download: the weights are random, in the shape of the params' `model.architecture` and its
`model.weights.dtype`, which changes neither the speed nor the memory of a step. The run is the one `medtune plan`
plans: the task with the most tokens per batch, its `train` config (batch size, gradient accumulation, bf16,
gradient checkpointing, attention), examples of random tokens of exactly its length (no padding, every token a
target: the planner's upper bound for the logits), through `medtune.training.train_adapter`, the train stage's code.

Printed: tokens/s over the optimizer steps after the first two (warm-up), the achieved FLOP/s as a share of a timed
8192^3 bf16 matmul on the same GPU (FLOP/s = 4 x parameters x tokens/s for frozen-base LoRA, 6 x with gradient
checkpointing, which runs each layer's forward twice), and the peak of `torch.cuda.max_memory_allocated` against
the plan's total without the CUDA context allowance.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from peft_memory import random_examples
from rich.console import Console
from train_throughput import matmul_flops
from transformers import TrainerCallback

from medtune.config import ArchitectureConfig, load_params, train_config
from medtune.modeling import llama_config
from medtune.plan import parameter_count, plan_memory, setup_from_params
from medtune.training import train_adapter

MB = 2**20


class StepTimes(TrainerCallback):
    """The wall-clock time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, *args, **kwargs) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def random_model(arch: ArchitectureConfig, dtype: str, out: Path) -> None:
    """A Llama-architecture causal LM of the given shape with random weights, saved as safetensors."""
    from transformers import AutoModelForCausalLM

    config = llama_config(arch)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="a composed params file")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps to train (at least 4)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    params = load_params(args.params)
    setup, task = setup_from_params(params)
    train = train_config(params, task)
    train.max_steps, train.eval_steps, train.logging_steps, train.checkpoint_steps = args.steps, 10**6, 1, 0
    per_step = train.batch_size * train.grad_accum
    examples = random_examples(per_step * args.steps, setup.seq_len, vocab=setup.architecture.vocab_size, seed=1)
    cuda = torch.cuda.is_available()
    times = StepTimes()
    with tempfile.TemporaryDirectory() as tmp:
        random_model(setup.architecture, params.model.weights.dtype, Path(tmp) / "base")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        train_adapter(
            kind="sft",
            base_dir=Path(tmp) / "base",
            train_examples=examples,
            eval_examples=examples[: train.batch_size],
            peft=params.peft,
            train=train,
            lora_targets=list(params.model.lora_targets),
            labels=[],
            seed=params.seed,
            adapter_dir=Path(tmp) / "adapter",
            live_dir=Path(tmp) / "live",
            work_dir=Path(tmp) / "work",
            callbacks=[times],
        )
    tokens_per_s = per_step * setup.seq_len * (len(times.times) - 2) / (times.times[-1] - times.times[1])
    flops = (6 if setup.gradient_checkpointing else 4) * parameter_count(setup.architecture) * tokens_per_s
    peak = matmul_flops(torch.bfloat16, 8192, 8192, 8192, device="cuda") if cuda else matmul_flops(torch.bfloat16)
    plan = plan_memory(setup, overhead=0)
    result = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": params.model.name,
        "task": task,
        "batch": f"{train.batch_size} x {setup.seq_len} tokens, gradient accumulation {train.grad_accum}",
        "gradient_checkpointing": setup.gradient_checkpointing,
        "attention": setup.attention,
        "steps_timed": len(times.times) - 2,
        "tokens_per_s": round(tokens_per_s, 1),
        "achieved_tflops": round(flops / 1e12, 2),
        "bf16_matmul_peak_tflops": round(peak / 1e12, 1),
        "share_of_peak": round(flops / peak, 3),
        "planned_mib": round(plan.total() / MB),
        "measured_peak_allocated_mib": round(torch.cuda.max_memory_allocated() / MB) if cuda else None,
    }
    if cuda:
        result["measured_over_planned"] = round(result["measured_peak_allocated_mib"] / result["planned_mib"], 3)
    Console().print_json(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
