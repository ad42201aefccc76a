"""Benchmark: medtune's training against the seed notebooks' recipe, same model, data, LoRA and examples.

    python benchmarks/train_throughput.py                              # SmolLM2 (models/base), 96 qa examples
    python benchmarks/train_throughput.py --model tiny --examples 8 --json out.json     # smoke test
    python benchmarks/train_throughput.py --profile     # also: where a medtune step's time goes (torch.profiler)

(a) notebook: every example padded to 256 tokens, Hugging Face `Trainer`, fp32, loss over the whole sequence
    (prompt and response, padding masked), as the seed notebooks trained.
(b) medtune: `medtune.training.train_adapter`, the train stage's own code, with the `train` config of params.yaml
    (`train=cpu`: bf16 autocast, completion-only loss with the LM head run only where a response token is
    predicted, batches of similar lengths padded to their longest example, no KV cache).
Both train 1 epoch over the same first N examples of the task's training split with the same LoRA (`peft`),
batch size, learning rate and seed. Then each adapter's eval loss is measured the same way: the mean negative
log-likelihood of the response tokens of the validation split (medtune.generation.perplexity, fp32).

Useful tokens are the non-padding tokens the model reads. Achieved FLOP/s = 4 x parameters x useful tokens / s:
forward 2 N per token, and the backward pass through a frozen base computes activation gradients only, another
2 N (the LoRA weight gradients are ~1% more). Peak: a timed `torch.matmul` of two 2048 x 2048 matrices in the
run's dtype (fp32 for the notebook, bf16 for a bf16 run). A matmul at the model's own MLP shape (one batch's tokens x
hidden x intermediate) shows whether its matrices are too small for that peak.

--profile runs medtune's recipe once more for 4 steps and profiles steps 2-4 (torch.profiler, self CPU time by
op): LoRA's rank-r matmuls, the other matmuls, attention's batched matmuls, copies (autocast's casts, mostly), the
log-softmax of the loss, and the rest (elementwise ops, optimizer, data). Then it runs those steps' matmuls again on
their own (same shapes and counts, no profiler) and prints the share of peak the steps would reach if nothing but
their matmuls took time: the ceiling for fusing or removing every other op.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from transformers import TrainerCallback

from medtune import data
from medtune.config import WeightsConfig, conf_section, load_params, task_config, train_config
from medtune.generation import perplexity
from medtune.modeling import build_base_model, load_causal_lm, load_tokenizer
from medtune.tasks import IGNORE_INDEX, tokenize_records
from medtune.training import lora_config, train_adapter

TINY_MODEL = "conf/model/tiny-random.yaml"  # the tiny random Llama (benchmarks run in the project root)

NOTEBOOK_LENGTH = 256


def examples_for(name: str, task: object, tokenizer: object, count: int) -> tuple[list[dict], list[dict]]:
    """Tokenized training and validation examples of the task's raw data, as the tokenize stage makes them,
    keeping those that fit the notebook's 256 tokens (so both recipes see exactly the same tokens)."""
    records, _ = data.to_task_records(data.read_source(task.data, f"tasks.{name}.data").splits["train"], task)
    examples, _ = tokenize_records(tokenizer, records, task, task.max_length)
    fitting = [e for e in examples if len(e["input_ids"]) <= NOTEBOOK_LENGTH]
    return fitting[:count], fitting[count : count + max(8, count // 4)]


def notebook_run(base_dir: Path, train: list[dict], params: object, args: object, work: Path) -> tuple[object, float]:
    """The seed notebooks' recipe; returns the trained model and its training seconds."""
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

    set_seed(params.seed)
    pad = load_tokenizer(base_dir).pad_token_id
    rows = []
    for e in train:
        n = len(e["input_ids"])
        ids = e["input_ids"] + [pad] * (NOTEBOOK_LENGTH - n)
        rows.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * n + [0] * (NOTEBOOK_LENGTH - n),
                "labels": e["input_ids"] + [IGNORE_INDEX] * (NOTEBOOK_LENGTH - n),  # the whole sequence
            }
        )
    model = get_peft_model(load_causal_lm(base_dir), lora_config(params.peft, list(params.model.lora_targets)))
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(work),
            num_train_epochs=1,
            learning_rate=args.lr,
            per_device_train_batch_size=args.batch_size,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=params.seed,
            logging_steps=max(1, len(rows) // args.batch_size // 4),
        ),
        train_dataset=rows,
        data_collator=default_data_collator,
    )
    start = time.perf_counter()
    trainer.train()
    return model, time.perf_counter() - start


def medtune_run(
    base_dir: Path, train: list[dict], valid: list[dict], params, args, work: Path, max_steps: int = -1, callbacks=()
):
    from peft import PeftModel

    config = OmegaConf.merge(train_config(params, args.task), {"epochs": 1, "max_steps": max_steps, "lr": args.lr})
    config.batch_size, config.eval_steps = args.batch_size, 10**6  # no evaluation inside the timed run
    _, resources = train_adapter(
        kind="sft",
        base_dir=base_dir,
        train_examples=train,
        eval_examples=valid,
        peft=params.peft,
        train=config,
        lora_targets=list(params.model.lora_targets),
        labels=[],
        seed=params.seed,
        adapter_dir=work / "adapter",
        live_dir=work / "live",
        work_dir=work / "trainer",
        callbacks=list(callbacks),
    )
    model = PeftModel.from_pretrained(load_causal_lm(base_dir), work / "adapter").eval()
    return model, resources["runtime_s"], config.bf16


class ProfileSteps(TrainerCallback):
    """torch.profiler over optimizer steps 2-4 (the first warms up), input shapes recorded to tell LoRA's apart,
    and the useful tokens those steps read."""

    def __init__(self) -> None:
        self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
        self.tokens = 0

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        if state.global_step == 1:
            self.tokens = -state.num_input_tokens_seen
            self.profiler.__enter__()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if state.global_step == 4:
            self.profiler.__exit__(None, None, None)
            self.tokens += state.num_input_tokens_seen


MATMULS = ("aten::mm", "aten::addmm")  # plus attention's aten::bmm


def time_breakdown(events: list, rank: int) -> dict[str, float]:
    """Shares of self CPU time of the profiled ops (`key_averages(group_by_input_shape=True)`): matmuls with a
    dimension equal to the LoRA rank, other matmuls, attention's batched matmuls, copies, the loss's log-softmax,
    and the rest."""
    groups = {
        "aten::bmm": "attention matmuls",
        "aten::copy_": "copies (casts)",
        "aten::_log_softmax": "log-softmax",
        "aten::_log_softmax_backward_data": "log-softmax",
    }
    times = dict.fromkeys(["LoRA matmuls", "other matmuls", *groups.values(), "rest"], 0.0)
    for event in events:
        if event.key in MATMULS:
            lora = any(rank in shape for shape in event.input_shapes if shape)
            times["LoRA matmuls" if lora else "other matmuls"] += event.self_cpu_time_total
        else:
            times[groups.get(event.key, "rest")] += event.self_cpu_time_total
    total = sum(times.values())
    return {name: t / total for name, t in times.items()}


def replayed_matmul_seconds(events: list, dtype: torch.dtype) -> float:
    """The profiled steps' matmuls run again on their own, same shapes and counts, without the profiler: how long
    the steps would take if nothing else took time (the profiler's own cost per op does not count here)."""
    seconds = 0.0
    for event in events:
        if event.key not in (*MATMULS, "aten::bmm"):
            continue
        a, b = [shape for shape in event.input_shapes if shape][-2:]  # addmm's first input is the bias
        x, y = torch.randn(a, dtype=dtype), torch.randn(b, dtype=dtype)
        matmul = torch.bmm if event.key == "aten::bmm" else torch.mm
        matmul(x, y)  # warm up
        start = time.perf_counter()
        for _ in range(event.count):
            matmul(x, y)
        seconds += time.perf_counter() - start
    return seconds


def matmul_flops(
    dtype: torch.dtype, m: int = 2048, k: int = 2048, n: int = 2048, repeats: int = 10, device: str = "cpu"
) -> float:
    """FLOP/s of a timed (m x k) @ (k x n) matmul: square 2048 for the peak, or one of the model's own shapes
    (on a GPU, benchmarks/gpu_training.py times 8192^3)."""
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
    torch.matmul(a, b)  # warm up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    _sync(device)
    return 2 * m * k * n * repeats / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=None, help="a base model folder (default: models/base/<model.name>) or `tiny`"
    )
    parser.add_argument("--task", default="qa", help="a generative task in params.yaml")
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", action="store_true", help="also profile 3 steps of medtune's recipe")
    args = parser.parse_args()

    params = load_params()
    task = task_config(params, args.task)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base_dir = Path(args.model or f"models/base/{params.model.name}")
        if args.model == "tiny":
            base_dir = work / "tiny"
            build_base_model(conf_section(WeightsConfig, TINY_MODEL, "weights"), base_dir)
        tokenizer = load_tokenizer(base_dir)
        train, valid = examples_for(args.task, task, tokenizer, args.examples)
        pad = tokenizer.pad_token_id
        notebook, notebook_s = notebook_run(base_dir, train, params, args, work / "notebook")
        notebook_loss = math.log(perplexity(notebook.eval(), valid, args.batch_size, pad))
        tuned, medtune_s, bf16 = medtune_run(base_dir, train, valid, params, args, work / "medtune")
        medtune_loss = math.log(perplexity(tuned, valid, args.batch_size, pad))
        parameters = sum(p.numel() for p in tuned.parameters())
        hidden, inner = tuned.config.hidden_size, tuned.config.intermediate_size
        if args.profile:
            profile = ProfileSteps()
            medtune_run(base_dir, train, valid, params, args, work / "profile", max_steps=4, callbacks=[profile])
            events = profile.profiler.key_averages(group_by_input_shape=True)
            breakdown = time_breakdown(events, params.peft.r)
            matmul_s = replayed_matmul_seconds(events, torch.bfloat16 if bf16 else torch.float32)
            profiled_tokens = profile.tokens

    useful = sum(len(e["input_ids"]) for e in train)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peak = {name: matmul_flops(dtype) for name, dtype in dtypes.items()}
    # the model's MLP up-projection over one batch's tokens: shows whether its matrices are too small for the peak
    batch_tokens = useful * args.batch_size // len(train)
    mlp = {name: matmul_flops(dtype, batch_tokens, hidden, inner) for name, dtype in dtypes.items()}
    runs = {
        "notebook": {"seconds": notebook_s, "eval_loss": notebook_loss, "dtype": "fp32"},
        "medtune": {"seconds": medtune_s, "eval_loss": medtune_loss, "dtype": "bf16" if bf16 else "fp32"},
    }
    for run in runs.values():
        run["useful_tokens_per_s"] = useful / run["seconds"]
        run["flops"] = 4 * parameters * run["useful_tokens_per_s"]
        run["share_of_peak"] = run["flops"] / peak[run["dtype"]]
    result = {
        "model": str(base_dir) if args.model != "tiny" else "tiny",
        "task": args.task,
        "examples": len(train),
        "useful_tokens": useful,
        "notebook_padded_tokens": len(train) * NOTEBOOK_LENGTH,
        "parameters": parameters,
        "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peak.items()},
        "mlp_shape_matmul_gflops": {k: round(v / 1e9, 1) for k, v in mlp.items()},
        "mlp_shape": [batch_tokens, hidden, inner],
        "runs": {
            name: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for name, r in runs.items()
        },
        "ratio": round(runs["medtune"]["useful_tokens_per_s"] / runs["notebook"]["useful_tokens_per_s"], 2),
        "eval_loss_change": round(medtune_loss / notebook_loss - 1, 4),
    }
    table = Table(title=f"LoRA training, {len(train)} {args.task} examples ({useful} useful tokens), {result['model']}")
    for column in ("recipe", "dtype", "seconds", "useful tokens/s", "eval loss", "GFLOP/s", "share of matmul peak"):
        table.add_column(column, justify="right")
    for name, r in runs.items():
        table.add_row(
            name,
            r["dtype"],
            f"{r['seconds']:.1f}",
            f"{r['useful_tokens_per_s']:.1f}",
            f"{r['eval_loss']:.4f}",
            f"{r['flops'] / 1e9:.1f}",
            f"{100 * r['share_of_peak']:.0f}% of {peak[r['dtype']] / 1e9:.0f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"medtune / notebook useful tokens/s: {result['ratio']}x; eval loss {100 * result['eval_loss_change']:+.1f}%"
    )
    console.print(
        f"matmul at the model's MLP shape ({batch_tokens} x {hidden} x {inner}): "
        + ", ".join(f"{d} {v / 1e9:.0f} GFLOP/s ({100 * v / peak[d]:.0f}% of the square peak)" for d, v in mlp.items())
    )
    if args.profile:
        only_matmuls = 4 * parameters * profiled_tokens / matmul_s / peak[runs["medtune"]["dtype"]]
        result["step_time_shares"] = {k: round(v, 4) for k, v in breakdown.items()}
        result["share_of_peak_if_only_matmuls"] = round(only_matmuls, 4)
        console.print(
            "medtune step, share of self CPU time (torch.profiler, steps 2-4): "
            + ", ".join(f"{k} {100 * v:.0f}%" for k, v in breakdown.items())
        )
        console.print(
            f"if nothing but the matmuls took time: {100 * result['share_of_peak_if_only_matmuls']:.0f}% of the peak"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
