"""Benchmark: memory and speed of LoRA vs QLoRA (4-bit NF4, 8-bit) fine-tuning on this machine.

Each variant trains the same adapter for a few steps in its own process (so its memory figures are its own),
through the same `medtune.training.train_adapter` the train stage uses.

    python benchmarks/peft_memory.py --shape tinyllama --steps 3      # random weights, TinyLlama-1.1B's shape
    python benchmarks/peft_memory.py --shape base --steps 10          # models/base/<model> on data/tokenized/ner
                                                                      # (needs `dvc repro tokenize@ner` first)

Per variant: the model's own memory (weights + adapter, `get_memory_footprint()`); while training, the peak of
the process's anonymous memory (RssAnon: activations, gradients, optimizer state, quantized weights) and of its
whole RSS (adds file pages: the mmapped safetensors checkpoint; a LoRA base computes straight from those pages,
while a QLoRA process only read them once to quantize, and the kernel may reclaim them); training throughput,
and the final train loss. Memory is sampled every 10 ms from /proc/self/status (Linux).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import TrainerCallback

from medtune.config import QuantizationConfig, WeightsConfig, conf_section, load_params, task_config, train_config
from medtune.io import read_jsonl

TINY_MODEL = "conf/model/tiny-random.yaml"  # the tiny random Llama (benchmarks run in the project root)
QLORA = "conf/peft/qlora.yaml"

VARIANTS = {
    "lora (fp32 base)": None,
    "qlora nf4, bf16 compute": conf_section(
        QuantizationConfig, QLORA, "quantization", bits=4, compute_dtype="bfloat16"
    ),
    "qlora nf4, fp32 compute": conf_section(QuantizationConfig, QLORA, "quantization", bits=4, compute_dtype="float32"),
    "qlora int8": conf_section(QuantizationConfig, QLORA, "quantization", bits=8),
}
# TinyLlama-1.1B's transformer (its 32k vocabulary replaced by the tiny byte-level one).
TINYLLAMA_SHAPE = dict(
    hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4
)


def memory_mb() -> dict[str, float]:
    """RssAnon, RssFile and VmRSS of this process in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in ("RssAnon", "RssFile", "VmRSS")}


class PeakMemory(TrainerCallback):
    """Samples the process memory in a background thread while the trainer is training; keeps the peaks."""

    def __init__(self) -> None:
        self.peak = {"RssAnon": 0.0, "RssFile": 0.0, "VmRSS": 0.0}
        self.training = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            if self.training:
                self.peak = {key: max(value, self.peak[key]) for key, value in memory_mb().items()}
            time.sleep(0.01)

    def on_train_begin(self, *args, **kwargs) -> None:
        self.training = True

    def on_train_end(self, *args, **kwargs) -> None:
        self.training = False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def random_examples(n: int, length: int, vocab: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(3, vocab, (length,), generator=g).tolist() for _ in range(n)]
    return [{"input_ids": ids, "labels": ids} for ids in rows]


def train_with_peak_memory(model_dir: Path, params: Any, **run: Any) -> tuple[dict, dict]:
    """Train through `train_adapter` (the train stage's code) in a scratch folder while `PeakMemory` samples this
    process; `run` holds kind, train_examples, eval_examples, peft, train and labels. Returns the results and
    resources of the run (one dict) and the peaks."""
    from medtune.training import train_adapter

    memory = PeakMemory()
    with tempfile.TemporaryDirectory() as tmp:
        results, resources = train_adapter(
            base_dir=model_dir,
            lora_targets=params.model.lora_targets,
            seed=params.seed,
            adapter_dir=Path(tmp) / "adapter",
            live_dir=Path(tmp) / "live",
            work_dir=Path(tmp) / "work",
            callbacks=[memory],
            **run,
        )
    memory.stop()
    return {**results, **resources}, memory.peak


def run_variant(name: str, shape: str, model_dir: Path, task: str, steps: int) -> dict:
    """Train `steps` steps with one variant in this process; train_adapter's metrics plus the memory peaks."""
    params = load_params()
    quantization = VARIANTS[name]
    peft = params.peft.copy()
    peft.method = "lora" if quantization is None else "qlora"
    peft.quantization = quantization
    train = train_config(params, task)
    train.max_steps, train.eval_steps = steps, steps
    cfg = task_config(params, task)
    if shape == "base":
        kind, labels = cfg.kind, list(cfg.labels)
        train_examples = read_jsonl(Path("data/tokenized") / task / "train.jsonl")
        eval_examples = read_jsonl(Path("data/tokenized") / task / "validation.jsonl")[: train.batch_size]
    else:
        kind, labels = "sft", []
        train_examples = random_examples(train.batch_size * steps, 64, vocab=250, seed=1)
        eval_examples = random_examples(train.batch_size, 64, vocab=250, seed=2)
    metrics, peak = train_with_peak_memory(
        model_dir,
        params,
        kind=kind,
        train_examples=train_examples,
        eval_examples=eval_examples,
        peft=peft,
        train=train,
        labels=labels,
    )
    return {**metrics, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["tinyllama", "base"], default="tinyllama")
    parser.add_argument("--task", default="ner", help="with --shape base: the tokenized task to train on")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one variant per process
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args.variant, args.shape, args.model_dir, args.task, args.steps)))
        return

    console = Console()
    params = load_params()
    with tempfile.TemporaryDirectory() as tmp:
        if args.shape == "base":
            model_dir, title = Path("models/base") / params.model.name, f"{params.model.name}, task {args.task}"
        else:
            from medtune.modeling import build_base_model

            console.log("Building a random model of TinyLlama-1.1B's shape (fp32 safetensors) ...")
            model_dir, title = Path(tmp), "random weights, TinyLlama-1.1B shape, sft on 64-token sequences"
            build_base_model(conf_section(WeightsConfig, TINY_MODEL, "weights", **TINYLLAMA_SHAPE), model_dir)
        table = Table(title=f"{title}: {args.steps} steps of batch {train_config(params, args.task).batch_size}")
        columns = ("variant", "model MB", "peak anon MB", "peak RSS MB", "tokens/s", "final loss")
        for column in columns:
            table.add_column(column, justify="left" if column == "variant" else "right")
        for name in VARIANTS:
            console.log(f"Training {args.steps} steps with {name} ...")
            cmd = [sys.executable, __file__, "--shape", args.shape, "--task", args.task, "--steps", str(args.steps)]
            cmd += ["--variant", name, "--model-dir", str(model_dir)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                console.print(out.stderr[-3000:])
                raise SystemExit(f"variant {name!r} failed (exit {out.returncode})")
            m = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
            memory = (f"{m['model_memory_mb']:.0f}", f"{m['peak']['RssAnon']:.0f}", f"{m['peak']['VmRSS']:.0f}")
            table.add_row(name, *memory, f"{m['train_tokens_per_s']:.1f}", f"{m['train_loss_final']:.4f}")
    console.print(table)


if __name__ == "__main__":
    main()
