"""Stage `harness@<task>` (opt-in): standard benchmarks on the base and the merged model, side by side.

Not part of the default run: medtune params 'harness.tasks=[qa]' && dvc repro harness@qa
Reads params: seed, eval.{bootstrap_samples,confidence}, harness.
    python -m stages.harness qa models/base/smollm2-135m models/merged/qa metrics/qa
Writes metrics/<task>/harness.json: per benchmark, each model's metrics with the harness's standard errors, and the
fine-tuned minus base difference with its paired bootstrap interval over the questions (medtune.harness).
Every benchmark is loaded before any model runs, so an unreachable one fails at once and writes nothing.
"""

import argparse
from pathlib import Path

from medtune.bootstrap import Bootstrap
from medtune.config import load_params
from medtune.console import log, run_main
from medtune.harness import (
    benchmark_names,
    check_benchmarks,
    compare_models,
    lm_eval_version,
    run_harness,
    task_manager,
)
from medtune.io import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("base_dir", type=Path)
    parser.add_argument("merged_dir", type=Path)
    parser.add_argument("metrics_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    harness = params.harness
    names = benchmark_names(harness)
    manager = task_manager(harness.include_path)
    check_benchmarks(names, manager)
    runs = {
        model: run_harness(model_dir, names, manager, harness, params.seed)
        for model, model_dir in (("base", args.base_dir), ("finetuned", args.merged_dir))
    }
    bootstrap = Bootstrap(params.eval.bootstrap_samples, params.eval.confidence, params.seed)
    settings = {
        "num_fewshot": harness.num_fewshot,
        "limit": harness.limit,
        "lm_eval": lm_eval_version(),
        "bootstrap": {"samples": bootstrap.samples, "confidence": bootstrap.confidence, "seed": params.seed},
    }
    results = compare_models(runs, bootstrap, settings)
    for name, entry in results["benchmarks"].items():
        log.info("%s: %s", name, {m: round(d, 4) for m, d in entry["difference"].items()})
    write_json(args.metrics_dir / "harness.json", results)


if __name__ == "__main__":
    run_main(main)
