"""Every check of a config value, run once when params.yaml is read (`medtune.config.validate` calls `check_params`).

OmegaConf has already checked keys and types against the schema in `medtune.config`; this module checks what a
type cannot say: a value that must be one of a few choices, a count that must be positive, keys that only make sense
together. One function per section of params.yaml, in its order. Each error names the key (`tasks.qa.split.test`),
so a wrong value fails before any stage runs instead of hours later in the stage that reads it. The code that reads a
checked value does not check it again. This module only raises: it changes no output.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from omegaconf import DictConfig

from medtune.config import (
    ATTENTION,
    ATTENTION_MODES,
    DATA_SOURCES,
    DPO_LOSSES,
    EXPORT_MODELS,
    GGUF_TYPES,
    IOB2_TAG,
    KINDS,
    LAUNCHERS,
    METRIC_NAMES,
    ON_INVALID,
    ON_LEAKAGE,
    ORPHAN_INSIDE,
    PEFT_METHODS,
    PHI_POLICIES,
    SFT_FIELDS,
    SPLITS,
    TAG_SCHEMES,
    TOKEN_LAYOUTS,
    WEIGHT_DTYPES,
    WEIGHT_SOURCES,
    DataConfig,
    EvalConfig,
    ExportConfig,
    HarnessConfig,
    JudgeConfig,
    ModelConfig,
    Params,
    PeftConfig,
    PrivacyConfig,
    ScopeConfig,
    TaskConfig,
    TrainConfig,
    align_train_config,
    carved_shares,
    merge_train,
    split_files,
    train_config,
)
from medtune.errors import ConfigError

TINY_SHAPE = ("init_seed", "hidden_size", "intermediate_size", "num_hidden_layers")
TINY_SHAPE += ("num_attention_heads", "num_key_value_heads")
QUANT_TYPES = ("nf4", "fp4")
# The `train` keys the DPO run does not read, and what to set instead.
ALIGN_UNREAD = {
    "max_length": "set align.max_length (tokens of prompt + answer)",
    "padding_free": "TRL pads each pair's two answers to a batch",
    "group_by_length": "pairs are drawn in seeded random order (a pair has no single length)",
    "launcher": "it runs in one process",
    "accelerate_config": "it runs in one process",
}


def check_params(cfg: Params) -> None:
    """Check every section of a schema-checked params.yaml; raise `ConfigError` at the first bad value."""
    check_model(cfg.model)
    check_peft(cfg.peft)
    check_train(cfg.train, "train")
    for name, task in cfg.tasks.items():
        check_task(task, f"tasks.{name}")
        check_task_train(cfg, name)
    check_eval(cfg.eval)
    check_judge(cfg.judge)
    check_scope(cfg.scope)
    check_export(cfg.export, cfg.tasks, cfg.align.tasks)
    check_harness(cfg.harness, cfg.tasks)
    check_align(cfg)
    check_privacy(cfg.privacy)


def check_model(model: ModelConfig) -> None:
    """Where the base weights come from: each source needs its own keys."""
    weights = model.weights
    choice("model.weights.source", weights.source, WEIGHT_SOURCES)
    choice("model.weights.dtype", weights.dtype, WEIGHT_DTYPES)
    for key in ("package", "file") if weights.source == "gguf-package" else ():
        if not weights[key]:
            raise ConfigError(
                f"model.weights.{key}", "is needed for source gguf-package (see conf/model/smollm2-135m.yaml)"
            )
    if weights.source == "hub" and not (weights.hub_id or weights.path):
        raise ConfigError("model.weights.hub_id", "set a hub id or model.weights.path for source 'hub'")
    unset = [key for key in TINY_SHAPE if weights[key] is None]
    if weights.source == "tiny-random" and unset:
        raise ConfigError(
            f"model.weights.{unset[0]}", "is needed for source tiny-random (see conf/model/tiny-random.yaml)"
        )
    if not model.lora_targets:
        raise ConfigError(
            "model.lora_targets", "names no module: list the projections LoRA adapts, e.g. [q_proj, v_proj]"
        )


def check_peft(peft: PeftConfig) -> None:
    """The adapter recipe; `quantization` belongs to qlora alone (checked here, without bitsandbytes, so `medtune
    plan` refuses what training would refuse)."""
    choice("peft.method", peft.method, PEFT_METHODS)
    adapter_keys = ("r", "alpha", "dropout", "use_dora")
    if peft.method == "full":
        given = [key for key in adapter_keys if peft[key] is not None]
        if given:
            raise ConfigError(
                f"peft.{given[0]}",
                "is a LoRA setting, and peft=full trains every weight without an adapter: leave it null",
            )
        if peft.quantization is not None:
            raise ConfigError("peft.quantization", "is only used with peft.method=qlora (select it with peft=qlora)")
        return
    unset = [key for key in adapter_keys if peft[key] is None]
    if unset:
        raise ConfigError(f"peft.{unset[0]}", f"{peft.method} needs it (see conf/peft/lora.yaml)")
    at_least("peft.r", peft.r, 1)
    if peft.alpha <= 0:
        raise ConfigError("peft.alpha", f"must be above 0, not {peft.alpha}")
    if not 0 <= peft.dropout < 1:
        raise ConfigError("peft.dropout", f"must be 0 or more and below 1, not {peft.dropout:g}")
    if peft.method == "lora" and peft.quantization is not None:
        raise ConfigError("peft.quantization", "is only used with peft.method=qlora (select it with peft=qlora)")
    if peft.method == "qlora":
        if peft.quantization is None or peft.quantization.bits not in (4, 8):
            raise ConfigError("peft.quantization.bits", "qlora needs 4 or 8 bits (see conf/peft/qlora.yaml)")
        choice("peft.quantization.quant_type", peft.quantization.quant_type, QUANT_TYPES)
        choice("peft.quantization.compute_dtype", peft.quantization.compute_dtype, WEIGHT_DTYPES)


def check_train(train: TrainConfig, key: str) -> None:
    """The training recipe, global (`train`) or a task's merged with its own overrides (`tasks.<name>.train`)."""
    choice(f"{key}.launcher", train.launcher, LAUNCHERS)
    choice(f"{key}.attn_implementation", train.attn_implementation, ATTENTION)
    for name in ("epochs", "lr"):
        if train[name] <= 0:
            raise ConfigError(f"{key}.{name}", f"must be above 0, not {train[name]:g}")
    for name in ("batch_size", "grad_accum", "logging_steps"):
        at_least(f"{key}.{name}", train[name], 1)
    if train.max_steps == 0 or train.max_steps < -1:
        raise ConfigError(f"{key}.max_steps", f"must be -1 (train all epochs) or 1 or more, not {train.max_steps}")
    interval(train.eval_steps, f"{key}.eval_steps")
    if train.checkpoint_steps != 0:
        interval(train.checkpoint_steps, f"{key}.checkpoint_steps", " or 0 for none")
    if train.checkpoint_steps >= 1 and train.checkpoint_steps % train.logging_steps:  # fractions are rounded up to one
        raise ConfigError(
            f"{key}.checkpoint_steps",
            f"must be 0 or a multiple of logging_steps ({train.logging_steps}), not {train.checkpoint_steps:g}: "
            "a run resumed from a checkpoint then logs the same loss curve as one that was never stopped",
        )
    count(f"{key}.eval_max_examples", train.eval_max_examples)
    count(f"{key}.max_length", train.max_length)


def check_task_train(cfg: Params, task: str) -> None:
    """A task's own `train` overrides: known keys (train_config merges them), the checks of `train`, and not the two
    keys that are one value for the whole run."""
    refused = {
        "max_length": f"is not read: set the task's tokens per example with tasks.{task}.max_length "
        "(train.max_length sets one length for every task)",
        # dvc.yaml tracks the file of train.accelerate_config, the same for every task
        "accelerate_config": "is one file for the whole run: set train.accelerate_config (a task may still set its "
        "own launcher)",
    }
    refuse_keys(cfg.tasks[task].train, refused, f"tasks.{task}.train")
    train = train_config(cfg, task)
    check_train(train, f"tasks.{task}.train")
    if cfg.tasks[task].attention == "bidirectional" and train.padding_free:
        raise ConfigError(
            f"tasks.{task}.attention",
            "bidirectional attention needs padded batches: a padding-free row would let sentences see each other "
            "(set train.padding_free=false for this task)",
        )


def check_task(task: TaskConfig, key: str) -> None:
    """A task (`key`: `tasks.<name>`): its kind, prompt, metrics and the data settings no dataset could satisfy."""
    choice(f"{key}.kind", task.kind, KINDS)
    if "{prompt}" not in task.prompt_template:
        raise ConfigError(f"{key}.prompt_template", f"{task.prompt_template!r} must contain {{prompt}}")
    at_least(f"{key}.max_length", task.max_length, 1)
    at_least(f"{key}.generation.max_new_tokens", task.generation.max_new_tokens, 1)
    unknown = [name for name in task.metrics if name not in METRIC_NAMES]
    if unknown:
        raise ConfigError(f"{key}.metrics", f"unknown metric {unknown[0]!r}; known: {', '.join(METRIC_NAMES)}")
    check_data(task.data, key)
    carved = carved_shares(task)
    for name, share in carved.items():  # training evaluates on validation, the evaluate stage reports on test
        if not 0 < share < 1:
            raise ConfigError(f"{key}.split.{name}", f"must be a share above 0 and below 1 (e.g. 0.1), not {share}")
    if sum(carved.values()) >= 1:
        shares = " and ".join(f"{name}={share}" for name, share in carved.items())
        raise ConfigError(f"{key}.split", f"{shares} leave no train split: their sum must be below 1")
    choice(f"{key}.attention", task.attention, ATTENTION_MODES)
    if task.kind == "sft":
        check_sft_columns(task.data, key)
        if task.attention != "causal":
            raise ConfigError(
                f"{key}.attention",
                "a generative (sft) task reads causally: only token_classification "
                "tasks may attend to the whole sentence",
            )
    else:
        if not any(layout <= task.data.columns.keys() for layout in TOKEN_LAYOUTS):
            raise ConfigError(f"{key}.data.columns", "must map `tokens` and `tags`, or `text` and `entities`")
        choice(f"{key}.orphan_inside", task.orphan_inside, ORPHAN_INSIDE)
        check_labels(list(task.labels), f"{key}.labels")
    check_tag_scheme(task, key)


def check_data(data: DataConfig, task_key: str) -> None:
    """Where a task's data comes from and what to do with bad or leaking records."""
    key = f"{task_key}.data"
    choice(f"{key}.source", data.source, DATA_SOURCES)
    check_data_path(data, key)
    if data.source == "hub" and not data.hub_id:
        raise ConfigError(f"{key}.hub_id", "is empty; set the dataset id, e.g. keivalya/MedQuad-MedicalQnADataset")
    choice(f"{key}.on_invalid", data.on_invalid, ON_INVALID)
    choice(f"{key}.on_leakage", data.on_leakage, ON_LEAKAGE)
    check_named_splits(data, key)
    unknown = sorted(set(data.split_max_records) - set(SPLITS))
    if unknown:
        raise ConfigError(f"{key}.split_max_records", f"unknown split {unknown[0]!r}; use {', '.join(SPLITS)}")
    count(f"{key}.max_records", data.max_records)
    for split, records in data.split_max_records.items():
        count(f"{key}.split_max_records.{split}", records)


def check_data_path(data: DataConfig, key: str) -> None:
    """`path` is the file or folder DVC tracks as this task's data (dvc.yaml: prepare's deps): inside the project,
    given relative to its root. A hub dataset names the file that pins it (its task config) or its local folder."""
    if not data.path:
        what = "file or folder" if data.source == "local" else "task config file (e.g. conf/task/qa_medquad.yaml)"
        raise ConfigError(f"{key}.path", f"is empty; set the {what} DVC tracks for this task's prepare stage")
    path = PurePosixPath(data.path)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(
            f"{key}.path",
            f"{data.path} is outside the project, where DVC cannot track it: give a path inside the project, relative "
            "to its root. Copy the data in and `dvc add` it (git then keeps a small pointer file), or "
            "`dvc import-url <url> data/<name>` to record where it came from (docs/data.md)",
        )


def check_named_splits(data: DataConfig, key: str) -> None:
    """`splits`: the task's own splits, by name. Local: a file or a list of files inside the `path` folder; hub: the
    dataset's split name. Train must be among them; the splits not named are carved from train."""
    if not data.splits:
        return
    unknown = sorted(set(data.splits) - set(SPLITS))
    if unknown:
        raise ConfigError(f"{key}.splits", f"unknown split {unknown[0]!r}; name train, validation or test")
    if "train" not in data.splits:
        raise ConfigError(f"{key}.splits", "must name train (the splits not named are carved from it)")
    for name, value in data.splits.items():
        files = split_files(value)
        if data.source == "hub" and not isinstance(value, str):
            raise ConfigError(f"{key}.splits.{name}", f"a hub split is one name, e.g. {name}, not {value!r}")
        if not files or any(not isinstance(f, str) or not f.strip() for f in files):
            raise ConfigError(f"{key}.splits.{name}", f"must be a file name or a list of them, not {value!r}")
        outside = [f for f in files if PurePosixPath(f).is_absolute() or ".." in PurePosixPath(f).parts]
        if data.source == "local" and outside:
            inside = f"must be a file inside {key}.path ({data.path}), given relative to it"
            raise ConfigError(f"{key}.splits.{name}", f"{outside[0]} {inside}")


def check_sft_columns(data: DataConfig, key: str) -> None:
    """A generative task maps `prompt` and `response`, or `messages` (a chat per row), but not both layouts."""
    both = [f for f in SFT_FIELDS if f in data.columns]
    if "messages" in data.columns and both:
        raise ConfigError(
            f"{key}.data.columns", f"maps messages (a chat per row) and {' and '.join(both)}: map one layout, not both"
        )
    missing = [] if "messages" in data.columns else [f for f in SFT_FIELDS if f not in data.columns]
    if missing:
        raise ConfigError(f"{key}.data.columns", f"must map {', '.join(missing)} to a source column")


def check_tag_scheme(task: TaskConfig, key: str) -> None:
    """The tag scheme of tokens/tags data: `iob2`, or `iobes` (read as IOB2); other layouts make IOB2 themselves."""
    data = task.data
    choice(f"{key}.data.tag_scheme", data.tag_scheme, TAG_SCHEMES)
    if data.tag_scheme != "iob2" and task.kind != "token_classification":
        raise ConfigError(f"{key}.data.tag_scheme", "only applies to token_classification tasks; remove it")
    if data.tag_scheme != "iob2" and not {"tokens", "tags"} <= data.columns.keys():
        raise ConfigError(
            f"{key}.data.tag_scheme", "only applies to `tokens` and `tags` columns (`text` and `entities` make IOB2)"
        )


def check_labels(labels: list[str], key: str) -> None:
    """The IOB2 label list of a token classification task: O first (label id 0), then B-/I- labels, no repeats."""
    if not labels or labels[0] != "O":
        raise ConfigError(key, f"must list O first, then the B-<Type> and I-<Type> labels; got {labels}")
    malformed = [label for label in labels if not IOB2_TAG.match(label)]
    if malformed:
        raise ConfigError(key, f"{malformed[0]!r} is not an IOB2 label (O, B-<Type> or I-<Type>)")
    repeated = [label for label in labels if labels.count(label) > 1]
    if repeated:
        raise ConfigError(key, f"{repeated[0]!r} is listed twice")


def check_eval(eval_cfg: EvalConfig) -> None:
    at_least("eval.batch_size", eval_cfg.batch_size, 1)
    count("eval.max_examples", eval_cfg.max_examples)
    if eval_cfg.bootstrap_samples < 0:
        raise ConfigError(
            "eval.bootstrap_samples", f"must be 0 (no intervals) or more, not {eval_cfg.bootstrap_samples}"
        )
    if not 0 < eval_cfg.confidence < 1:
        raise ConfigError("eval.confidence", f"must be above 0 and below 1 (0.95: 95%), not {eval_cfg.confidence:g}")
    if not 0 <= eval_cfg.near_copy_distance < 1:
        raise ConfigError(
            "eval.near_copy_distance", f"must be 0 or more and below 1, not {eval_cfg.near_copy_distance:g}"
        )
    general_max = eval_cfg.general.max_examples
    if general_max is not None and general_max < 0:
        raise ConfigError(
            "eval.general.max_examples", f"must be 0 (no forgetting check) or more, or null for all, not {general_max}"
        )
    at_least("eval.general.max_new_tokens", eval_cfg.general.max_new_tokens, 1)


def check_judge(judge: JudgeConfig) -> None:
    """The judge sends text to an endpoint: only one the user configured, and only when enabled."""
    if judge.enabled and not (judge.url and judge.model):
        raise ConfigError(
            "judge.url", "set judge.url and judge.model (an OpenAI-compatible endpoint) or judge.enabled=false"
        )
    count("judge.max_examples", judge.max_examples)
    if judge.timeout_s <= 0:
        raise ConfigError("judge.timeout_s", f"must be above 0, not {judge.timeout_s:g}")


def check_scope(scope: ScopeConfig) -> None:
    if scope.c <= 0:
        raise ConfigError("scope.c", f"must be above 0 (the inverse regularisation strength), not {scope.c:g}")
    if not 0 <= scope.threshold <= 1:
        raise ConfigError("scope.threshold", f"is a probability: between 0 and 1, not {scope.threshold:g}")


def check_export(export: ExportConfig, tasks: DictConfig, aligned: list[str]) -> None:
    """The export stage runs once per export.tasks entry on that task's merged (or aligned) model, so each must be a
    generative task of this run (and preference-tuned, for `export.model=aligned`); its types must be GGUF types
    medtune writes."""
    generative_tasks("export.tasks", export.tasks, tasks)
    for gguf_type in export.types:
        choice("export.types", gguf_type, GGUF_TYPES)
    if "q4_k_m" in export.types and "f16" not in export.types:
        raise ConfigError("export.types", "q4_k_m is quantized from the f16 file: list f16 in export.types too")
    if export.ollama not in export.types:
        raise ConfigError("export.ollama", f"{export.ollama!r} is not in export.types {list(export.types)}")
    choice("export.model", export.model, EXPORT_MODELS)
    for name in export.tasks if export.model == "aligned" else ():
        if name not in aligned:
            raise ConfigError("export.model", f"aligned: {name!r} is not preference-tuned (add it to align.tasks)")


def check_harness(harness: HarnessConfig, tasks: DictConfig) -> None:
    """The harness stage benchmarks causal LMs: generative tasks of this run only, and a benchmark list that names
    one of `lists` or harness task names."""
    generative_tasks("harness.tasks", harness.tasks, tasks)
    if isinstance(harness.benchmarks, str):
        if harness.benchmarks not in harness.lists:
            names = ", ".join(harness.lists)
            raise ConfigError("harness.benchmarks", f"{harness.benchmarks!r} is not a list of harness.lists ({names})")
    elif not harness.benchmarks or not all(isinstance(b, str) and b for b in harness.benchmarks):
        raise ConfigError("harness.benchmarks", "must name a list of harness.lists or list lm-eval task names")
    at_least("harness.num_fewshot", harness.num_fewshot, 0)
    count("harness.limit", harness.limit)
    at_least("harness.batch_size", harness.batch_size, 1)


def check_align(cfg: Params) -> None:
    """Preference tuning follows SFT of a generative task with a LoRA adapter (the reference model is the adapter
    switched off); pairs need two answers to compare besides the reference; the loss is one of TRL's."""
    align, peft_method = cfg.align, cfg.peft.method
    generative_tasks("align.tasks", align.tasks, cfg.tasks)
    pairs = align.pairs
    at_least("align.pairs.samples", pairs.samples, 1)
    count("align.pairs.max_prompts", pairs.max_prompts)
    if not pairs.temperature > 0:
        raise ConfigError("align.pairs.temperature", f"must be above 0 (sampling), not {pairs.temperature:g}")
    if not 0 < pairs.top_p <= 1:
        raise ConfigError("align.pairs.top_p", f"must be above 0 and at most 1, not {pairs.top_p:g}")
    if pairs.margin < 0:
        raise ConfigError("align.pairs.margin", f"must be 0 or more, not {pairs.margin:g}")
    if not 0 < pairs.validation_share < 1:
        share = pairs.validation_share
        raise ConfigError("align.pairs.validation_share", f"must be above 0 and below 1, not {share:g}")
    for name in align.given:
        if name not in align.tasks:
            raise ConfigError("align.given", f"{name!r} is not in align.tasks {list(align.tasks)}")
    if not align.beta > 0:
        raise ConfigError("align.beta", f"must be above 0, not {align.beta:g}")
    if not align.loss_type:
        raise ConfigError("align.loss_type", f"must name at least one of TRL's losses ({', '.join(DPO_LOSSES)})")
    for loss in align.loss_type:
        choice("align.loss_type", loss, DPO_LOSSES)
    count("align.max_length", align.max_length)
    if align.tasks and peft_method == "full":
        raise ConfigError(
            "align.tasks",
            "preference tuning trains a LoRA adapter over the SFT model, whose reference is the same weights with the "
            "adapter off; with peft.method=full there is no adapter: use peft=lora (or qlora) for an aligned run",
        )
    check_align_train(cfg)


def check_align_train(cfg: Params) -> None:
    """`align.train`: known keys (checked even while align.tasks is empty: a typo is caught when it is written, not
    when a task is first aligned), none the DPO run does not read, and the checks of `train` for each aligned task's
    merged config."""
    refused = {name: f"is not read by the align stage: {why}" for name, why in ALIGN_UNREAD.items()}
    refuse_keys(cfg.align.train, refused, "align.train")
    merge_train(cfg.train, cfg.align.train, "align.train")
    for task in cfg.align.tasks:
        check_train(align_train_config(cfg, task), "align.train")


def refuse_keys(overrides: DictConfig, refused: dict[str, str], key: str) -> None:
    """A map of training overrides (`tasks.<name>.train`, `align.train`) must not set the keys in `refused`, each
    with the problem to report as `<key>.<name>`."""
    for name, problem in refused.items():
        if name in overrides:
            raise ConfigError(f"{key}.{name}", problem)


def generative_tasks(key: str, names: list[str], tasks: DictConfig) -> None:
    """Stages that run on a task's merged causal LM (export, harness) take only generative tasks of this run."""
    for name in names:
        if name not in tasks or tasks[name].kind != "sft":
            generative = ", ".join(t for t in tasks if tasks[t].kind == "sft") or "none"
            raise ConfigError(key, f"{name!r} is not a generative task of this run (those: {generative})")


def check_privacy(privacy: PrivacyConfig) -> None:
    choice("privacy.phi", privacy.phi, PHI_POLICIES)


def choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    """A key that names one of a few things."""
    if value not in allowed:
        raise ConfigError(key, f"must be {' or '.join(map(repr, allowed))}, not {value!r}")


def at_least(key: str, value: int, least: int) -> None:
    if value < least:
        raise ConfigError(key, f"must be {least} or more, not {value}")


def count(key: str, value: int | None) -> None:
    """Example and record limits are counts or None (all): a negative one would silently drop examples from the end
    (`examples[:-1]`) instead of failing."""
    if value is not None and value < 1:
        raise ConfigError(key, f"must be 1 or more (or null for all), not {value}")


def interval(value: float, key: str, otherwise: str = "") -> None:
    """How often training does something: every N optimizer steps (a whole number) or every fraction of an epoch
    (above 0, below 1; medtune.training.interval_steps). 2.5 is neither: refused, not silently rounded."""
    if value <= 0 or (value >= 1 and not float(value).is_integer()):
        raise ConfigError(
            key,
            f"must be a whole number of steps (1 or more) or a fraction of an epoch (above 0, below 1){otherwise}, "
            f"not {value:g}",
        )
