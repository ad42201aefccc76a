"""The `medtune` command.

medtune params [OVERRIDE ...]       compose conf/ into params.yaml (what `dvc exp run` does by itself), e.g.
                                    medtune params model=tiny-random train.epochs=1
medtune plan [OVERRIDE ...]         peak GPU memory of training with that config (params.yaml untouched), e.g.
                                    medtune plan model=mistral-7b-instruct-v0.3 peft=qlora train.max_length=512
                                    (--stage align: of preference tuning, for the tasks in align.tasks)
medtune predict ner "TEXT"          entities with character offsets, as JSON
medtune predict TASK --input in.jsonl --output out.jsonl
                                    one `{"text": ...}` per line in; out: `entities` (ner) or `output` and
                                    `safety_note` (generative tasks); resumable
medtune chat terminology           terminal chat with a task's fine-tuned model (scope guard, safety note)
medtune serve qa [--port 7860]      the same in a local web app on 127.0.0.1; for ner, highlighted entities
chat, serve, predict --aligned      the task's preference-tuned model (models/aligned/<task>) instead
medtune report --against main       metrics/report.md: params, metrics (better/worse), figures, samples vs `main`
medtune exp table --metric ner.f1   experiments best first: the params that differ and the task's metrics
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from medtune.config import compose_params, load_params, task_config
from medtune.console import log, run_main
from medtune.errors import ConfigError

if TYPE_CHECKING:
    from medtune.assistant import Assistant


ALIGNED_HELP = "run the task's preference-tuned model, models/aligned/<task> (the align stage's)"


def main() -> None:
    run_main(_dispatch)


def _dispatch() -> None:
    args = _parser().parse_args()
    args.func(args)


def _parser() -> argparse.ArgumentParser:
    """The command line: a subparser per command, each naming its handler (`set_defaults(func=...)`), so a command
    and what runs it are declared in one place."""
    parser = argparse.ArgumentParser(
        prog="medtune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    params = commands.add_parser("params", help="regenerate params.yaml from conf/ (Hydra), with optional overrides")
    params.add_argument("overrides", nargs="*", help="Hydra overrides such as model=tiny-random or peft.r=16")
    params.add_argument("--root", default=".", help="project root holding conf/ (default: current directory)")
    params.set_defaults(func=_params)
    plan = commands.add_parser("plan", help="estimate the peak GPU memory of training with conf/ and overrides")
    plan.add_argument("overrides", nargs="*", help="Hydra overrides such as model=mistral-7b-instruct-v0.3 peft=qlora")
    plan.add_argument("--root", default=".", help="project root holding conf/ (default: current directory)")
    plan.add_argument(
        "--stage", choices=("train", "align"), default="train", help="SFT training, or preference tuning (align.tasks)"
    )
    plan.set_defaults(func=_plan)
    predict = commands.add_parser("predict", help="run a task's fine-tuned model on a text or a JSONL file")
    predict.add_argument("task", help="a task in params.yaml, e.g. ner")
    predict.add_argument("text", nargs="?", help="the text to tag")
    predict.add_argument("--input", type=Path, help="JSONL file with a `text` field per line")
    predict.add_argument("--output", type=Path, help="write JSONL here instead of standard output")
    predict.add_argument("--model", type=Path, help="model folder (default: models/merged/<task>)")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.add_argument("--aligned", action="store_true", help=ALIGNED_HELP)
    predict.set_defaults(func=_predict)
    chat = commands.add_parser("chat", help="terminal chat with a generative task's fine-tuned model")
    chat.add_argument("task", help="a generative task in params.yaml, e.g. qa or terminology")
    chat.set_defaults(func=_chat)
    serve = commands.add_parser("serve", help="local web app (127.0.0.1 only) for a task's fine-tuned model")
    serve.add_argument("task", help="a task in params.yaml: chat for generative tasks, highlighted entities for ner")
    serve.add_argument("--port", type=int, default=7860)
    serve.set_defaults(func=_serve)
    for command in (chat, serve):
        command.add_argument(
            "--model", type=Path, help="model folder (default: models/merged/<task>; with --adapter: the base)"
        )
        command.add_argument(
            "--adapter", type=Path, help="a LoRA adapter folder to apply to --model instead of a merged model"
        )
        command.add_argument(
            "--guard", type=Path, default=Path("models/scope/classifier.json"), help="scope classifier"
        )
        command.add_argument("--aligned", action="store_true", help=ALIGNED_HELP)
    report = commands.add_parser("report", help="compare the results with another revision, as Markdown + PNG")
    report.add_argument("--against", required=True, help="the revision to compare with (branch, commit, experiment)")
    report.add_argument("--rev", help="the revision to report on (default: the workspace)")
    report.add_argument("--out", type=Path, default=Path("metrics/report.md"))
    report.set_defaults(func=_report)
    exp = commands.add_parser("exp", help="experiments")
    exp.add_argument("action", choices=["table"])
    exp.add_argument("--metric", required=True, help="<task>.<metric> to rank by, e.g. ner.f1 or qa.perplexity")
    exp.set_defaults(func=_exp_table)
    return parser


def _params(args: argparse.Namespace) -> None:
    out = compose_params(args.root, args.overrides)
    log.info("Wrote %s from conf/%s", out, f" with {' '.join(args.overrides)}" if args.overrides else "")


def _plan(args: argparse.Namespace) -> None:
    """Compose the config as `medtune params` would, into a temporary file, and print its memory plan."""
    import tempfile

    from rich.console import Console

    from medtune.plan import plan_memory, print_plan, setup_from_params

    with tempfile.TemporaryDirectory() as tmp:
        params = load_params(compose_params(args.root, args.overrides, out=Path(tmp) / "params.yaml"))
    setup, task = setup_from_params(params, args.stage)
    method = params.peft.method + (f" {params.peft.quantization.bits}-bit" if params.peft.method == "qlora" else "")
    method += "" if setup.full else f" r={setup.rank}"
    what = "preference tuning (DPO, both answers of each pair)" if args.stage == "align" else "training"
    title = (
        f"{params.model.name}, {method}: peak GPU memory of {what} "
        f"(task {task}: batch {setup.batch_size} x {setup.seq_len} tokens)"
    )
    print_plan(plan_memory(setup), setup, title, Console(width=None if sys.stdout.isatty() else 160))


def _chat(args: argparse.Namespace) -> None:
    from rich.console import Console

    from medtune.assistant import chat_loop

    console = Console()
    chat_loop(_assistant(args, "chat"), console.input, console)


def _serve(args: argparse.Namespace) -> None:
    from medtune import webapp

    task = task_config(load_params(), args.task)
    title = f"medtune {args.task}"
    if task.kind == "token_classification":
        from medtune.predict import Predictor

        if args.adapter is not None:
            raise ConfigError("--adapter", "serve ner needs a merged model: `dvc repro merge@ner` makes one")
        app = webapp.ner_app(Predictor(task, model_dir(args)), title)
    else:
        app = webapp.chat_app(_assistant(args, "serve"), title)
    url = webapp.launch(app, args.port)
    log.info("Serving %s at %s (this machine only). Ctrl+C stops it.", title, url)
    try:
        app.block_thread()
    finally:
        app.close()


def _assistant(args: argparse.Namespace, command: str) -> Assistant:
    """The task's assistant for chat and serve: merged model, or base + adapter, and the scope guard."""
    from medtune.assistant import load_assistant

    task = task_config(load_params(), args.task)
    if task.kind != "sft":
        raise ConfigError(
            f"tasks.{args.task}.kind", f"{command} needs a generative (sft) task; for ner use `medtune predict`"
        )
    folder = model_dir(args)
    log.info("Loading %s%s and the scope guard", folder, f" + adapter {args.adapter}" if args.adapter else "")
    return load_assistant(task, folder, args.adapter, args.guard)


def model_dir(args: argparse.Namespace) -> Path:
    """The model folder a command runs: --model, the task's aligned model (--aligned), or its merged SFT model."""
    if not args.aligned:
        return args.model or Path("models/merged") / args.task
    if args.model is not None or getattr(args, "adapter", None) is not None:
        raise ConfigError("--aligned", "uses models/aligned/<task>: leave out --model and --adapter")
    folder = Path("models/aligned") / args.task
    if not folder.is_dir():
        raise ConfigError(
            "--aligned", f"{folder} does not exist: preference-tune the task first (docs/align.md), e.g. "
            f"medtune params 'align.tasks=[{args.task}]' && dvc repro align@{args.task}",
        )  # fmt: skip
    return folder


def _report(args: argparse.Namespace) -> None:
    from medtune.report import write_report

    log.info("Wrote %s", write_report(args.against, args.rev, args.out))


def _exp_table(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from medtune.report import experiment_rows, rank, varying_params, with_interval

    metric = args.metric
    rows = experiment_rows()
    task = metric.split(".", 1)[0]
    try:
        ranked = rank(rows, metric)
    except ValueError as err:
        raise ConfigError("--metric", str(err)) from None
    params = varying_params(rows)
    top_level = {m for r in rows for m in r.metrics if m.startswith(f"{task}.") and m.count(".") == 1}
    metrics = [metric] + sorted(top_level - {metric})
    table = Table(title=f"experiments ranked by {metric}, best first (metrics with their bootstrap interval)")
    table.add_column("experiment")
    for column in [*params, *metrics]:
        table.add_column(column, justify="right")
    for r in ranked:
        values = [str(r.params.get(p, "—")) for p in params]
        values += [with_interval(r.metrics.get(m), r.intervals.get(m)) for m in metrics]
        table.add_row(r.name, *values)
    Console(width=None if sys.stdout.isatty() else 240).print(table)  # a pipe or CI log gets the whole table


def _predict(args: argparse.Namespace) -> None:
    from medtune.predict import Predictor, predict_file

    task = task_config(load_params(), args.task)
    if (args.text is None) == (args.input is None):
        raise ConfigError("predict", "give either TEXT or --input FILE")
    if args.input is not None and args.output is None:
        raise ConfigError("predict", "--input needs --output (the output is what makes a batch run resumable)")
    predictor = Predictor(task, model_dir(args))
    if args.text is not None:
        result = predictor.predict([args.text], batch_size=1)[0]
        print(json.dumps(result.get("entities", result), indent=2, ensure_ascii=False))
        return
    written, skipped = predict_file(predictor, args.input, args.output, args.batch_size)
    log.info("Wrote %d results to %s (%d already there, skipped)", written, args.output, skipped)
