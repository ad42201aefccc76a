"""Standard benchmarks with EleutherAI's lm-evaluation-harness: a task's base and merged models side by side.

The harness does the work (its task registry, prompts, few-shot sampling, scoring and standard errors), through its
own Hugging Face model class on the local model folders; medtune picks the benchmarks (`harness.benchmarks`: a list
of `harness.lists` or harness task names), runs both models on the same questions, and adds what a comparison
needs: the difference per metric with a paired bootstrap interval over the questions (medtune.bootstrap, the same
resampling as eval.json's intervals), from the harness's per-question scores.

Benchmark data comes from the hub: each benchmark is loaded offline first (a task over local files, or data already in
the datasets cache), then, if that fails, with the hub on (medtune.hub.online, unless the user set HF_HUB_OFFLINE);
one that cannot be reached stops the stage naming it. The models then run offline on the cached data. Tasks of your
own over local files go in `harness.include_path` (data/harness/ holds an authored sample) and need no network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medtune.bootstrap import Bootstrap
from medtune.config import HarnessConfig
from medtune.errors import ConfigError, MedtuneError
from medtune.hub import online

log = logging.getLogger(__name__)
STDERR = "_stderr"  # the harness's suffix of a metric's standard error


class BenchmarkUnavailable(MedtuneError):
    """A benchmark's data could not be loaded (offline, not cached, gated)."""


def benchmark_names(harness: HarnessConfig) -> list[str]:
    """The harness task names to run: a list of `harness.lists`, or the names given."""
    chosen = harness.benchmarks
    return list(harness.lists[chosen]) if isinstance(chosen, str) else list(chosen)


def task_manager(include_path: str) -> Any:
    """The harness's task registry with the user's own task YAMLs added."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def check_benchmarks(names: list[str], manager: Any) -> None:
    """Load each benchmark once (its data then sits in the datasets cache): an unknown name or data that cannot be
    reached stops here, naming the benchmark, before any model runs."""
    from lm_eval.tasks import get_task_dict

    for name in names:
        log.info("Loading benchmark %s", name)
        try:
            try:  # offline first: a task over local files, or hub data already in the cache
                get_task_dict([name], manager)
            except OSError:
                log.info("%s is not in the datasets cache: fetching it from the hub", name)
                with online():
                    get_task_dict([name], manager)
        except KeyError:
            raise ConfigError(
                "harness.benchmarks",
                f"{name!r} is not a task of lm-eval (`lm-eval ls tasks` lists them) nor in harness.include_path",
            ) from None
        except OSError as err:  # datasets' ConnectionError, a missing or gated dataset, no cache while offline
            raise BenchmarkUnavailable(
                f"benchmark {name}: its data could not be loaded ({err}). It needs the hub once: run it on a machine "
                "with internet, after which the datasets cache serves it offline (HF_DATASETS_OFFLINE=1); or write "
                "a task over local files in harness.include_path"
            ) from None


def run_harness(model_dir: Path, names: list[str], manager: Any, harness: HarnessConfig, seed: int) -> dict:
    """One model on the benchmarks: `{benchmark: {"metrics": {metric: value, metric_stderr: se},
    "questions": {metric: [per-question score, by doc id]}, "examples": n}}`."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from medtune.modeling import device

    log.info("Running %d benchmarks on %s", len(names), model_dir)
    model = HFLM(pretrained=str(model_dir), dtype="float32", device=str(device()), batch_size=harness.batch_size)
    out = simple_evaluate(
        model=model,
        tasks=names,
        task_manager=manager,
        num_fewshot=harness.num_fewshot,
        limit=harness.limit,
        log_samples=True,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    runs = {}
    for name, results in sorted(out["results"].items()):
        metrics = _metrics(results)
        runs[name] = {
            "metrics": metrics,
            "questions": _questions(out["samples"].get(name, []), metrics),
            "examples": out["n-samples"].get(name, {}).get("effective"),
        }
    return runs


def _metrics(results: dict) -> dict[str, float]:
    """The harness's `"acc,none": 0.5, "acc_stderr,none": 0.1` as `{"acc": 0.5, "acc_stderr": 0.1}`; a filter other
    than `none` (generation tasks' answer extraction) stays in the name: `exact_match_strict-match`."""
    metrics = {}
    for key, value in results.items():
        if "," not in key or not isinstance(value, int | float):
            continue
        metric, filter_name = key.split(",", 1)
        metrics[metric if filter_name == "none" else f"{metric}_{filter_name}"] = float(value)
    return dict(sorted(metrics.items()))


def _questions(samples: list[dict], metrics: dict[str, float]) -> dict[str, list[float]]:
    """Per-question scores of the metrics that are means over questions (accuracy), by doc id, for the paired
    bootstrap; groups (e.g. `mmlu`) have none of their own."""
    ordered = sorted(samples, key=lambda s: s["doc_id"])
    means = [m for m in metrics if not m.endswith(STDERR) and all(m in s for s in ordered)]
    return {m: [float(s[m]) for s in ordered] for m in means} if ordered else {}


def compare_models(runs: dict[str, dict], bootstrap: Bootstrap, settings: dict) -> dict:
    """harness.json: per benchmark, each model's metrics with their standard errors, and for each per-question metric
    the fine-tuned minus base difference with its paired bootstrap interval over the questions."""
    benchmarks = {}
    for name in runs["base"]:
        base, tuned = runs["base"][name], runs["finetuned"][name]
        entry = {"examples": tuned["examples"], "base": base["metrics"], "finetuned": tuned["metrics"]}
        shared = sorted(base["questions"].keys() & tuned["questions"].keys())
        entry["difference"] = {m: tuned["metrics"][m] - base["metrics"][m] for m in shared}
        if bootstrap.samples:
            entry["interval"] = {m: _paired(bootstrap, base["questions"][m], tuned["questions"][m]) for m in shared}
        benchmarks[name] = entry
    return {"benchmarks": benchmarks, "settings": settings}


def _paired(bootstrap: Bootstrap, base: list[float], tuned: list[float]) -> dict[str, float]:
    _, low, high = bootstrap.paired_difference("accuracy", base, tuned)  # a mean over questions
    return {"low": low, "high": high}


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
