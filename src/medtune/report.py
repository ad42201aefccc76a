"""The review report: two revisions of the pipeline's results side by side, for a pull request.

`medtune report --against main` writes metrics/report.md:
- the params that changed (what `dvc params diff` shows);
- per task, the fine-tuned model's headline metrics in both revisions, with the absolute and relative change and a
  mark that knows each metric's direction (`medtune.metrics.DIRECTION`: lower perplexity is better, higher F1 is
  better). "better" / "worse" only when the change is significant: a paired bootstrap over the test examples both
  revisions scored (metrics/<task>/examples.jsonl, medtune.bootstrap) puts the interval of the change away from 0;
  otherwise "within noise". Benchmark scores of the harness stage (`harness.<benchmark>.<metric>`, from
  metrics/<task>/harness.json) are marked by the harness's standard errors of both revisions (a normal interval of
  the change). No mark where no such test is possible: different test examples, a metric without
  per-example scores (validation loss), timings (one measurement each; the report says whether both were made on
  the same hardware, medtune.machine). A metric present in only one revision says so;
- per task that ran the harness stage, its benchmarks: base vs fine-tuned, the difference and its paired interval;
- the review plots of dvc.yaml as PNG (metrics/report/*.png), so the report shows them without a browser;
- three test examples per generative task with both revisions' outputs.

Everything is read through DVC: params and metrics with its Repo API, sample outputs with `dvc.api.read`, and the
figures from `dvc plots diff --json` (the Vega-Lite specs DVC's HTML uses, data included), rendered to PNG
offline by vl-convert, since DVC's HTML loads Vega from the internet.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

from medtune.bootstrap import Bootstrap, statistic
from medtune.errors import ConfigError
from medtune.formatting import flatten, format_number
from medtune.formatting import with_interval as with_interval  # re-exported: `medtune exp`'s table imports it here
from medtune.harness import STDERR
from medtune.io import atomic_write_text
from medtune.machine import same_hardware
from medtune.metrics import direction

SAMPLES_PER_TASK = 3
MAX_CELL_CHARS = 400
# eval_resources.json: one wall-clock measurement per revision, which the load of the machine moves (+77% between two
# runs of the same code in one test session), so never marked; shown side by side, saying whether the hardware matched
TIMINGS = ("ms_per_token", "ms_per_sentence")

ALIGNED = "aligned"  # metrics/<task>/aligned/: the preference-tuned model against the fine-tuned one


@dataclass
class MetricChange:
    task: str
    metric: str
    old: float | None
    new: float | None
    paired: tuple[float, float] | None = None  # the interval of the change (paired bootstrap), when one was run
    unmarked: str = ""  # why the change gets no better / worse mark, e.g. "different test examples"

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old

    @property
    def relative(self) -> float | None:
        return None if self.delta is None or self.old == 0 else self.delta / abs(self.old)

    @property
    def verdict(self) -> str:
        """better / worse (significant, or a timing on the same hardware), within noise, same, unmarked, or which
        revision lacks the metric; empty for a metric without direction."""
        if self.old is None:
            return "new"
        if self.new is None:
            return "gone"
        sign = direction(self.metric)
        if self.delta == 0:
            return "same"
        if sign is None:
            return ""
        if self.unmarked:
            return "unmarked"
        if self.paired is not None and self.paired[0] <= 0 <= self.paired[1]:
            return "within noise"
        return "better" if self.delta * sign > 0 else "worse"


def reported_model(task: str) -> str:
    """The model a report row of `task` is about: the fine-tuned one, or for `<task>/aligned` (the evaluation in
    metrics/<task>/aligned/, evaluate_aligned's) the preference-tuned one."""
    return ALIGNED if task.endswith(f"/{ALIGNED}") else "finetuned"


def headline_metrics(metric_files: dict[str, Any]) -> dict[str, dict[str, float]]:
    """`{task: {metric: value}}` from DVC's metrics data of one revision: the fine-tuned model's scores in
    metrics/<task>/eval.json (nested names dotted), its speed in eval_resources.json, the final validation loss
    of metrics/<task>/train.json and its benchmark scores in harness.json (`harness.<benchmark>.<metric>`); the
    aligned model's, when a task is preference-tuned, as task `<task>/aligned` (metrics/<task>/aligned/).
    Only metrics with a direction are headline metrics (counts such as `examples` are context), and of the
    per-type scores only F1."""
    tasks: dict[str, dict[str, float]] = {}
    for path, content in metric_files.items():
        parts = Path(path).parts
        if len(parts) == 4 and parts[2] == ALIGNED:  # the aligned model's evaluation: task `<task>/aligned`
            parts = (parts[0], f"{parts[1]}/{ALIGNED}", parts[3])
        if len(parts) != 3 or parts[0] != "metrics" or "data" not in content:
            continue
        task, name = parts[1], parts[2]
        if name in ("eval.json", "eval_resources.json"):
            values = flatten(content["data"].get(reported_model(task), {}))
        elif name == "train.json":
            values = {"eval_loss": content["data"].get("eval_loss")}
        elif name == "harness.json":
            values = _harness_values(content["data"], "finetuned")
        else:
            continue
        tasks.setdefault(task, {}).update({k: v for k, v in values.items() if _is_headline(k, v)})
    return tasks


def _harness_values(harness: dict, model: str) -> dict[str, float]:
    """`{harness.<benchmark>.<metric>: value}` of one model in harness.json, standard errors included."""
    return {
        f"harness.{bench}.{metric}": value
        for bench, entry in harness.get("benchmarks", {}).items()
        for metric, value in entry.get(model, {}).items()
    }


def harness_stderrs(metric_files: dict[str, Any]) -> dict[str, dict[str, float]]:
    """`{task: {harness.<benchmark>.<metric>: standard error}}` of the fine-tuned model, for the marks."""
    found: dict[str, dict[str, float]] = {}
    for task, data in _task_files(metric_files, "harness.json"):
        values = _harness_values(data, "finetuned")
        found[task] = {m: values[m + STDERR] for m in values if m + STDERR in values}
    return found


def _task_files(metric_files: dict[str, Any], name: str) -> list[tuple[str, dict]]:
    """`(task, data)` of each metrics/<task>/<name> in DVC's metrics data of one revision, by task."""
    found = []
    for path, content in sorted(metric_files.items()):
        parts = Path(path).parts
        if len(parts) == 3 and parts[0] == "metrics" and parts[2] == name and "data" in content:
            found.append((parts[1], content["data"]))
    return found


def compare(old: dict[str, dict[str, float]], new: dict[str, dict[str, float]]) -> list[MetricChange]:
    """One row per task and metric found in either revision, in a stable order, without significance yet."""
    rows = []
    for task in sorted(old.keys() | new.keys()):
        a, b = old.get(task, {}), new.get(task, {})
        rows += [MetricChange(task, m, a.get(m), b.get(m)) for m in sorted(a.keys() | b.keys())]
    return rows


def mark_changes(
    changes: list[MetricChange],
    examples: dict[str, tuple[list[dict], list[dict]]],
    hardware: dict[str, tuple[dict | None, dict | None]],
    bootstrap: Bootstrap,
    stderrs: dict[str, tuple[dict, dict]] | None = None,
) -> list[MetricChange]:
    """Each change with its paired bootstrap interval, or the reason it gets no mark. `examples` holds per task the
    examples.jsonl rows of both revisions, `hardware` the machines their timings were made on, `stderrs` the
    benchmark standard errors of both revisions (`harness_stderrs`)."""
    tested = []
    for c in changes:
        if not c.delta or direction(c.metric) is None:  # missing on one side, the same, or without direction
            tested.append(c)
        elif c.metric.startswith("harness."):
            old_se, new_se = (stderrs or {}).get(c.task, ({}, {}))
            tested.append(_by_stderr(c, old_se.get(c.metric), new_se.get(c.metric), bootstrap.confidence))
        elif c.metric in TIMINGS:
            same = same_hardware(*hardware.get(c.task, (None, None)))
            tested.append(replace(c, unmarked="one timing per revision, not tested" if same else "different machines"))
        else:
            old, new = examples.get(c.task, ([], []))
            tested.append(_paired(c, old, new, bootstrap))
    return tested


def _by_stderr(change: MetricChange, old_se: float | None, new_se: float | None, confidence: float) -> MetricChange:
    """The change of a benchmark score with a normal interval from both revisions' standard errors (the harness
    keeps no per-question scores across revisions; independent samples, so the interval is conservative)."""
    if old_se is None or new_se is None:
        return replace(change, unmarked="no standard error")
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.hypot(old_se, new_se)
    return replace(change, paired=(change.delta - half, change.delta + half))


def _paired(change: MetricChange, old: list[dict], new: list[dict], bootstrap: Bootstrap) -> MetricChange:
    """The change tested on the fine-tuned model's statistics of the test examples both revisions scored."""
    key, _ = statistic(change.metric)
    model = reported_model(change.task)
    stats = [{row["id"]: row[model][key] for row in rows if key in row.get(model, {})} for rows in (old, new)]
    if not all(stats):
        return replace(change, unmarked="no per-example scores")
    if stats[0].keys() != stats[1].keys():
        return replace(change, unmarked="different test examples")
    ids = sorted(stats[0])
    _, low, high = bootstrap.paired_difference(change.metric, [stats[0][i] for i in ids], [stats[1][i] for i in ids])
    return replace(change, paired=(low, high))


def changed_params(diff: dict[str, dict[str, dict]]) -> list[tuple[str, Any, Any]]:
    """`(name, old, new)` from `Repo.params.diff()["diff"]`, all params files together. A task present in only one
    revision (e.g. an experiment run with -S 'tasks=[ner]') is one row `tasks.<name>`, not one row per key."""
    rows = sorted((name, c["old"], c["new"]) for changes in diff.values() for name, c in changes.items())
    tasks = {name.split(".")[1] for name, _, _ in rows if name.startswith("tasks.") and name.count(".") >= 2}
    for task in sorted(tasks):
        prefix = f"tasks.{task}."
        own = [row for row in rows if row[0].startswith(prefix)]
        for side in (1, 2):  # every key of the task missing on one side: the whole task was added or removed
            if all(row[side] is None for row in own):
                rows = [row for row in rows if not row[0].startswith(prefix)]
                whole = "(not run)", "(run)"
                rows.append((f"tasks.{task}", *(whole if side == 1 else whole[::-1])))
                break
    return sorted(rows)


def render(
    old_label: str,
    new_label: str,
    params: list[tuple[str, Any, Any]],
    changes: list[MetricChange],
    figures: list[Path],
    samples: dict[str, list[dict]],
    out_dir: Path,
    confidence: float = 0.95,
) -> str:
    """The report as Markdown (GitHub flavour); figure links are relative to `out_dir`."""
    lines = [f"# medtune report: `{new_label}` against `{old_label}`", ""]
    lines += ["## Params that changed", ""]
    if params:
        lines += ["| param | " + old_label + " | " + new_label + " |", "|---|---|---|"]
        lines += [f"| `{name}` | {_cell(old)} | {_cell(new)} |" for name, old, new in params]
    else:
        lines.append("None.")
    lines += ["", "## Metrics of the fine-tuned models", ""]
    lines += [
        f"✅ / ❌: the change is significant at {confidence:.0%} (paired bootstrap over the test examples both "
        "revisions scored; the interval of the change is shown). *within noise*: it is not. Timings are one "
        "measurement per revision and are not marked.",
        "",
    ]
    marks = {"better": "✅ better", "worse": "❌ worse", "same": "= same", "new": f"only in {new_label}"}
    marks |= {"gone": f"only in {old_label}", "within noise": "within noise"}
    for task in dict.fromkeys(c.task for c in changes):
        verdicts = {c.verdict for c in changes if c.task == task}
        if verdicts in ({"new"}, {"gone"}):  # the task ran in one revision only (e.g. -S 'tasks=[ner]')
            lines += [f"### {task}", "", f"Not run in `{old_label if verdicts == {'new'} else new_label}`.", ""]
            continue
        lines += [f"### {task}", "", f"| metric | {old_label} | {new_label} | change | change % | interval | |"]
        lines.append("|---|---:|---:|---:|---:|---:|---|")
        for c in (c for c in changes if c.task == task):
            rel = "" if c.relative is None else f"{100 * c.relative:+.1f}%"
            delta = "" if c.delta is None else f"{c.delta:+.4g}"
            interval = "" if c.paired is None else f"[{c.paired[0]:+.3g}, {c.paired[1]:+.3g}]"
            mark = f"not marked: {c.unmarked}" if c.verdict == "unmarked" else marks.get(c.verdict, "")
            old, new = format_number(c.old), format_number(c.new)
            lines.append(f"| {c.metric} | {old} | {new} | {delta} | {rel} | {interval} | {mark} |")
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{f.stem}]({f.relative_to(out_dir).as_posix()})" for f in figures]
        lines.append("")
    if samples:
        lines += ["## Sample outputs", ""]
        for task, rows in samples.items():
            lines += [f"### {task}", "", f"| input | reference | {old_label} | {new_label} |", "|---|---|---|---|"]
            lines += [
                f"| {_cell(r['source'])} | {_cell(r['reference'])} | {_cell(r['old'])} | {_cell(r['new'])} |"
                for r in rows
            ]
            lines.append("")
    return "\n".join(lines)


def benchmark_tables(metric_files: dict[str, Any], label: str) -> str:
    """Markdown: per task with a harness.json in this revision, each benchmark's metrics, base vs fine-tuned, with
    the harness's standard errors, the difference and its paired interval over the questions."""
    lines = []
    for task, data in _task_files(metric_files, "harness.json"):
        lines += ["", f"### {task} (`{label}`)", ""]
        lines += [
            "| benchmark | metric | questions | base | fine-tuned | difference | interval |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for bench, entry in sorted(data.get("benchmarks", {}).items()):
            for metric in (m for m in entry.get("finetuned", {}) if not m.endswith(STDERR)):
                cells = [_with_stderr(entry.get(model, {}), metric) for model in ("base", "finetuned")]
                diff = entry.get("difference", {}).get(metric)
                bounds = entry.get("interval", {}).get(metric)
                interval = "" if bounds is None else f"[{bounds['low']:+.3f}, {bounds['high']:+.3f}]"
                delta = "" if diff is None else f"{diff:+.3f}"
                row = [bench, metric, entry.get("examples", ""), *cells, delta, interval]
                lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(["", "## Benchmarks (lm-evaluation-harness)", *lines, ""]) if lines else ""


def _with_stderr(scores: dict, metric: str) -> str:
    if metric not in scores:
        return "—"
    se = scores.get(metric + STDERR)
    return f"{scores[metric]:.3f}" + ("" if se is None else f" ± {se:.3f}")


def paired_samples(old: list[dict], new: list[dict], n: int = SAMPLES_PER_TASK, model: str = "finetuned") -> list[dict]:
    """The first `n` test examples present in both revisions, with each revision's output of `model`.
    Only generative tasks have text outputs; tagging samples (token lists) give none."""
    old_by_id = {row["id"]: row for row in old if isinstance(row.get(model), str)}
    pairs = [
        {"source": row["source"], "reference": row["reference"], "old": old_by_id[row["id"]][model], "new": row[model]}
        for row in new
        if row["id"] in old_by_id and isinstance(row.get(model), str)
    ]
    return pairs[:n]


def write_report(against: str, rev: str | None = None, out: Path = Path("metrics/report.md")) -> Path:
    """Compare revision `rev` (default: the workspace) with `against` and write the report and its figures."""
    from dvc.repo import Repo

    repo = Repo(".")
    revs = [against] if rev is None else [against, rev]
    shown = repo.metrics.show(revs=revs)
    new_key = "workspace" if rev is None else rev
    files = {r: shown[r].get("data", {}) for r in (against, new_key)}
    metrics = {r: headline_metrics(files[r]) for r in (against, new_key)}
    params = changed_params(repo.params.diff(a_rev=against, b_rev=new_key).get("diff", {}))
    figure_dir = out.with_suffix("")
    figures = render_figures(against, rev, figure_dir)
    samples, examples, hardware = {}, {}, {}
    for task in sorted(metrics[against].keys() & metrics[new_key].keys()):
        path = f"metrics/{task}/samples.jsonl"
        pairs = paired_samples(
            _read_jsonl_at(repo, path, against), _read_jsonl_at(repo, path, rev), model=reported_model(task)
        )
        if pairs:
            samples[task] = pairs
        path = f"metrics/{task}/examples.jsonl"
        examples[task] = (_read_jsonl_at(repo, path, against), _read_jsonl_at(repo, path, rev))
        path = f"metrics/{task}/eval_machine.json"
        hardware[task] = tuple(
            json.loads(text) if text else None for text in (_read_at(repo, path, r) for r in (against, rev))
        )
    bootstrap = bootstrap_settings(files[new_key])
    stderrs = {r: harness_stderrs(files[r]) for r in (against, new_key)}
    stderr_pairs = {task: (stderrs[against].get(task, {}), stderrs[new_key].get(task, {})) for task in metrics[new_key]}
    changes = mark_changes(compare(metrics[against], metrics[new_key]), examples, hardware, bootstrap, stderr_pairs)
    label = rev or "workspace"
    markdown = render(against, label, params, changes, figures, samples, out.parent, bootstrap.confidence)
    markdown += benchmark_tables(files[new_key], label)
    atomic_write_text(out, markdown + "\n")
    return out


def bootstrap_settings(metric_files: dict[str, Any]) -> Bootstrap:
    """The bootstrap the revision's evaluations ran (eval.json `bootstrap`: samples, confidence, seed), for the
    paired comparison; medtune's defaults when none recorded one."""
    for path, content in sorted(metric_files.items()):
        if path.endswith("/eval.json") and "bootstrap" in content.get("data", {}):
            settings = content["data"]["bootstrap"]
            return Bootstrap(settings["samples"] or Bootstrap.samples, settings["confidence"], settings["seed"])
    return Bootstrap()


def render_figures(against: str, rev: str | None, out_dir: Path) -> list[Path]:
    """PNG files of every plot dvc.yaml declares, both revisions overlaid, as `dvc plots diff` draws them."""
    import vl_convert

    plots = _plots_diff(against, rev)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    written = []
    for plot_id, renders in sorted(plots.items()):
        for render_ in renders:
            if render_.get("type") != "vega":
                continue
            path_ = plot_id.split("::")[-1].removeprefix("metrics/").rsplit(".", 1)[0]
            path_ = path_.replace("live/plots/metrics/eval/", "validation_").replace("live/plots/metrics/", "training_")
            name = path_.replace("/", "_")
            path = out_dir / f"{name}.png"
            path.write_bytes(vl_convert.vegalite_to_png(json.dumps(render_["content"]), scale=1.0))
            written.append(path)
    return written


def _plots_diff(against: str, rev: str | None) -> dict[str, Any]:
    """`dvc plots diff --json`'s plots. When DVC fails (mostly a revision it cannot find), its own message is the
    explanation, so it is passed on in the ConfigError instead of a bare exit status."""
    args = ["plots", "diff", against, *([rev] if rev else []), "--json"]
    result = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        problem = " ".join(result.stderr.split()) or f"no message, exit status {result.returncode}"
        raise ConfigError("--against", f"`dvc {' '.join(args)}` failed: {problem}")
    return json.loads(result.stdout)["data"]


def _read_jsonl_at(repo: Any, path: str, rev: str | None) -> list[dict]:
    """A JSONL file as it is in revision `rev` (None: the workspace); empty if it does not exist there."""
    text = _read_at(repo, path, rev) or ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _read_at(repo: Any, path: str, rev: str | None) -> str | None:
    """A file's text as it is in revision `rev` (None: the workspace); None if it does not exist there."""
    import dvc.api
    from dvc.exceptions import PathMissingError

    try:
        return (
            Path(path).read_text(encoding="utf-8") if rev is None else dvc.api.read(path, repo=repo.root_dir, rev=rev)
        )
    except (FileNotFoundError, PathMissingError):
        return None


def _is_headline(name: str, value: Any) -> bool:
    """A number with a direction; of per-type scores (ner), only F1, so a table stays readable."""
    per_type_detail = name.startswith("per_type.") and not name.endswith(".f1")
    return isinstance(value, int | float) and direction(name) is not None and not per_type_detail


def _cell(value: Any) -> str:
    """Text for one Markdown table cell: no pipes or newlines, at most MAX_CELL_CHARS characters."""
    text = "—" if value is None else str(value)
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    return text.replace("|", "\\|").replace("\n", "<br>")


@dataclass
class ExperimentRow:
    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # `<task>.<metric>` -> eval.json's


def headline_intervals(metric_files: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """`{<task>.<metric>: (low, high)}`: the fine-tuned model's intervals in each metrics/<task>/eval.json."""
    found = {}
    for task, data in _task_files(metric_files, "eval.json"):
        for metric, bounds in data.get("finetuned", {}).get("interval", {}).items():
            found[f"{task}.{metric}"] = (bounds["low"], bounds["high"])
    return found


def experiment_rows() -> list[ExperimentRow]:
    """The workspace, the baseline commit and every experiment `dvc exp show` lists, with flat params and the
    headline metrics of every task (`<task>.<metric>`)."""
    import dvc.api
    from dvc.repo import Repo

    repo = Repo(".")
    rows = []
    for entry in dvc.api.exp_show(repo="."):
        rev = entry["Experiment"] or entry["rev"]
        shown = repo.metrics.show(revs=[rev])[rev].get("data", {})
        metrics = {f"{t}.{m}": v for t, values in headline_metrics(shown).items() for m, v in values.items()}
        params = repo.params.show(revs=[rev])[rev].get("data", {}).get("params.yaml", {}).get("data", {})
        run_tasks = ",".join(params.get("tasks", {}))  # one column for which tasks ran (-S 'tasks=[ner]')
        rows.append(ExperimentRow(rev, {"tasks": run_tasks, **flatten(params)}, metrics, headline_intervals(shown)))
    return rows


def rank(rows: list[ExperimentRow], metric: str) -> list[ExperimentRow]:
    """Best first for `metric` (its direction decides), rows without it last."""
    sign = direction(metric)
    if sign is None:
        raise ValueError(f"{metric!r} has no direction (see medtune.metrics.DIRECTION); pick e.g. ner.f1")
    have = [r for r in rows if metric in r.metrics]
    return sorted(have, key=lambda r: -sign * r.metrics[metric]) + [r for r in rows if metric not in r.metrics]


def varying_params(rows: list[ExperimentRow]) -> list[str]:
    """Params whose value differs between the rows: the columns worth showing. The settings of a task that some
    rows did not run are left out (the `tasks` column says which ran)."""
    partial = {t for r in rows for t in r.params.get("tasks", "").split(",")} - set.intersection(
        *(set(r.params.get("tasks", "").split(",")) for r in rows)
    )
    names = sorted({n for r in rows for n in r.params if not (n.startswith("tasks.") and n.split(".")[1] in partial)})
    return [n for n in names if len({json.dumps(r.params.get(n), sort_keys=True) for r in rows}) > 1]
