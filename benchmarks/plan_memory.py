"""Benchmark: the memory planner (`medtune plan`) against the memory of a real training step on this CPU.

    python benchmarks/plan_memory.py                              # the tiny random model and SmolLM2 (models/base)
    python benchmarks/plan_memory.py --model tiny --json out.json  # smoke test

Each model trains a few steps through `medtune.training.train_adapter` (the train stage's code) in its own
process, with params.yaml's `peft` and `train` settings for the task `medtune plan` plans for, on random examples of
exactly that task's max_length, every token a target (the planner's upper bound for the logits). Equal lengths
leave a padded batch without padding, so transformers builds no attention mask, where the plan counts a padded
batch's (~4 MiB for the tiny model, ~48 MiB for SmolLM2 at 8 x 320). Measured: the peak resident memory
of the process while training (VmRSS, sampled every 10 ms by benchmarks/peft_memory.py's PeakMemory) minus its
resident memory just before train_adapter loads the model (libraries already imported). Planned: `medtune.plan`
for the same model folder and settings, without the CUDA allowance.

The CPU process holds things the plan does not count, so measured/planned is expected above 1, most for the tiny
model: what any training process adds whatever the model (the Trainer, dataloader, dvclive and Python objects,
oneDNN's kernels and scratch buffers; ~75 MiB here), temporaries while transformers builds a mask, the
short-lived gradients of the backward pass (the plan counts what is kept), memory glibc's allocator keeps after
tensors are freed, and CPU-only formats (LoRA dropout keeps an fp32 mask on CPU, a 1-byte one on CUDA).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from peft_memory import memory_mb, random_examples, train_with_peak_memory
from rich.console import Console
from rich.table import Table

from medtune.config import WeightsConfig, conf_section, load_params, train_config
from medtune.plan import TrainingSetup, architecture_from_config_json, plan_memory, setup_from_params

TINY_MODEL = "conf/model/tiny-random.yaml"  # the tiny random Llama (benchmarks run in the project root)

MODELS = {"tiny": "tiny random Llama (2 layers, hidden 64)", "smollm2": "SmolLM2-135M (models/base/smollm2-135m)"}
MB = 2**20


def planned_setup(model_dir: Path) -> tuple[TrainingSetup, str]:
    """params.yaml's training run, for the model in `model_dir` (its config.json gives the shape)."""
    setup, task = setup_from_params(load_params())
    return replace(setup, architecture=architecture_from_config_json(model_dir / "config.json")), task


def measure(model_dir: Path, steps: int) -> dict:
    """Train `steps` steps in this process; the peak RSS increase over the RSS before the model is loaded, in MB."""
    # What train_adapter imports on first use: the baseline holds the libraries, so the increase is the training's.
    import dvclive  # noqa: F401
    import peft  # noqa: F401
    from transformers import Trainer  # noqa: F401
    from transformers.integrations import DVCLiveCallback  # noqa: F401

    import medtune.training  # noqa: F401

    params = load_params()
    setup, task = planned_setup(model_dir)
    train = train_config(params, task)
    train.max_steps, train.eval_steps, train.logging_steps = steps, steps, steps
    vocab = min(250, setup.architecture.vocab_size)
    train_examples = random_examples(setup.batch_size * steps, setup.seq_len, vocab=vocab, seed=1)
    eval_examples = random_examples(setup.batch_size, setup.seq_len, vocab=vocab, seed=2)
    before = memory_mb()["VmRSS"]
    _, peak = train_with_peak_memory(
        model_dir,
        params,
        kind="sft",
        train_examples=train_examples,
        eval_examples=eval_examples,
        peft=params.peft,
        train=train,
        labels=[],
    )
    return {"measured_mb": peak["VmRSS"] - before, "rss_before_mb": before}


def compare(name: str, model_dir: Path, steps: int) -> dict:
    """Planned and measured memory of one model (measured in a subprocess, so the peak is its own)."""
    cmd = [sys.executable, __file__, "--measure", str(model_dir), "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{name}: training failed (exit {out.returncode})\n{out.stderr[-3000:]}")
    measured = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    setup, task = planned_setup(model_dir)
    plan = plan_memory(setup, overhead=0)
    parts = {k: v / MB for k, v in asdict(plan).items() if type(v) is int and k != "overhead"}  # not the bool flag
    planned = plan.total() / MB
    return {
        "model": MODELS[name],
        "task": task,
        "batch_size": setup.batch_size,
        "seq_len": setup.seq_len,
        "gradient_checkpointing": setup.gradient_checkpointing,
        "planned_mb": planned,
        "planned_parts_mb": parts,
        **measured,
        "ratio": measured["measured_mb"] / planned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one model folder per process
    args = parser.parse_args()
    if args.measure:
        print("RESULT " + json.dumps(measure(args.measure, args.steps)))
        return

    from medtune.modeling import build_base_model

    console = Console(width=None if sys.stdout.isatty() else 130)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"tiny": Path(tmp), "smollm2": Path("models/base/smollm2-135m")}
        build_base_model(conf_section(WeightsConfig, TINY_MODEL, "weights"), folders["tiny"])
        for name in MODELS if args.model == "all" else [args.model]:
            console.log(f"Training {args.steps} steps of {MODELS[name]} ...")
            results[name] = compare(name, folders[name], args.steps)
    table = Table(title=f"medtune plan vs measured: peak memory of {args.steps} training steps on this CPU (MiB)")
    columns = ("model", "batch x tokens", "planned (no CUDA allowance)", "measured RSS increase", "measured / planned")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, r in results.items():
        shape = f"{r['batch_size']} x {r['seq_len']}"
        table.add_row(name, shape, f"{r['planned_mb']:.0f}", f"{r['measured_mb']:.0f}", f"{r['ratio']:.2f}")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "models": results}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
