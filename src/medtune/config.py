"""Load and validate params.yaml (the Hydra composition of conf/), and regenerate it.

The schema below is the single list of valid keys: a misspelled key in conf/, params.yaml or a
`dvc exp run -S` override fails with the closest valid key suggested, instead of being ignored.
OmegaConf does the type checking; we only turn its errors into `ConfigError`s that say what to do.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import tempfile
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from medtune.errors import ConfigError

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"
LAUNCHERS = ("python", "accelerate")
ATTENTION = ("eager", "sdpa", "flash_attention_2")  # transformers' attn_implementation values medtune trains with
SCALARS = {str: "text", int: "an integer", float: "a number", bool: "true or false"}
PHI_POLICIES = ("error", "warn", "redact")
KINDS = ("sft", "token_classification")  # the two model heads: causal LM, token classifier
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")  # what models/base may store its weights in


@dataclass
class WeightsConfig:
    source: str = "hub"  # gguf-package | hub | tiny-random
    package: str | None = None  # gguf-package: the installed distribution that ships the file
    file: str | None = None  # gguf-package: path of the .gguf file inside that distribution
    hub_id: str | None = None
    revision: str | None = None
    path: str | None = None  # a local model folder; wins over hub_id
    dtype: str = "float32"
    init_seed: int = 0  # tiny-random only
    hidden_size: int = 64  # a multiple of 64: bitsandbytes' CPU 4-bit kernels quantize in blocks of 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2


@dataclass
class ArchitectureConfig:
    """The transformer's shape, as its config.json states it: all `medtune plan` needs to estimate memory."""

    hidden_size: int = MISSING
    intermediate_size: int = MISSING
    num_hidden_layers: int = MISSING
    num_attention_heads: int = MISSING
    num_key_value_heads: int = MISSING
    vocab_size: int = MISSING
    tie_word_embeddings: bool = False
    head_dim: int | None = None  # null: hidden_size / num_attention_heads (Mistral-Nemo: 128, not 5120 / 32)


@dataclass
class ModelConfig:
    name: str = "???"
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    lora_targets: list[str] = field(default_factory=list)
    allow_pickle: bool = False  # load pickle (.bin/.pt) weights; pickle can run code, so only from a trusted source
    architecture: ArchitectureConfig | None = None  # null: read from weights.path/config.json (medtune plan)


@dataclass
class QuantizationConfig:
    bits: int = 4  # 4 (QLoRA) or 8 (LLM.int8)
    quant_type: str = "nf4"  # 4-bit only: nf4 | fp4
    double_quant: bool = True  # 4-bit only: quantize the quantization constants too
    compute_dtype: str = "bfloat16"  # dtype the 4-bit weights are dequantized to for each matmul


@dataclass
class PeftConfig:
    method: str = "lora"  # lora | qlora
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    quantization: QuantizationConfig | None = None  # qlora: how bitsandbytes stores the frozen base


@dataclass
class TrainConfig:
    epochs: float = 3
    lr: float = 3e-4
    lr_scheduler: str = "cosine"
    warmup_steps: float = 0.05
    weight_decay: float = 0.0
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = -1
    bf16: bool = True
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    # eval_steps and checkpoint_steps: a whole number is optimizer steps, a fraction (< 1) a share of an epoch
    eval_steps: float = 10
    eval_max_examples: int | None = None  # validation while training on a seeded sample of this many; None: all
    checkpoint_steps: float = 20  # a resumable checkpoint every N steps (a multiple of logging_steps); 0: none
    max_length: int | None = None  # tokens per example for every task; None: each task's own max_length
    padding_free: bool = False  # one row per batch, no padding (see medtune.training.make_batch)
    group_by_length: bool = False  # batches of similar lengths: less padding
    attn_implementation: str = "sdpa"  # eager | sdpa | flash_attention_2 (see conf/train/cpu.yaml for eager)
    torch_compile: bool = False  # torch.compile the model before training (see conf/train/*.yaml for when it pays)
    launcher: str = "python"  # python: one process | accelerate: `accelerate launch` with accelerate_config
    accelerate_config: str = "conf/accelerate/ddp_cpu.yaml"


@dataclass
class DataConfig:
    source: str = "local"  # local | hub
    path: str | None = None  # what DVC tracks for the task: the data file, or the folder holding its split files
    hub_id: str | None = None
    revision: str | None = None
    hub_split: str = "train"  # hub: the split read as train when `splits` names none
    # the task's own splits: name -> a file or list of files inside the `path` folder (local), or a hub split name;
    # the splits not named are carved from train by seed (`split`)
    splits: dict[str, Any] = field(default_factory=dict)
    split_max_records: dict[str, int] = field(default_factory=dict)  # e.g. {validation: 500}: a seeded sample
    on_leakage: str = "warn"  # the same text in two named splits: warn (counted in stats.json) | error
    columns: dict[str, str] = field(default_factory=dict)  # our field -> source column
    id_column: str | None = None  # null: ids are made from the record number
    max_records: int | None = None  # keep a seeded random sample of this many records
    tag_names: list[str] | None = None  # token_classification: names of integer tags (Hugging Face ner_tags)
    tag_scheme: str = "iob2"  # token_classification: the tags column's scheme, iob2 | iobes (S-X, E-X: read as IOB2)
    on_invalid: str = "error"  # error | drop
    provenance: str = ""  # who wrote or published the data, and its terms; goes into the model card


@dataclass
class SplitConfig:
    validation: float = 0.1
    test: float = 0.1


@dataclass
class GenerationConfig:
    max_new_tokens: int = 96


@dataclass
class TaskConfig:
    kind: str = "sft"  # sft | token_classification
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    system: str = ""
    prompt_template: str = "{prompt}"  # the user turn; {prompt} is the record's prompt field
    max_length: int = 384
    metrics: list[str] = field(default_factory=lambda: ["rouge_l"])  # names in medtune.metrics.TEXT_METRICS
    labels: list[str] = field(default_factory=list)  # token_classification: the IOB2 label list (O first)
    orphan_inside: str = "error"  # token_classification: error | repair (an I-X without B-X becomes B-X)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: dict[str, Any] = field(default_factory=dict)  # overrides of the global `train` config for this task


@dataclass
class EvalConfig:
    batch_size: int = 16
    max_examples: int | None = None
    bootstrap_samples: int = 1000  # resamples of the test examples for each metric's interval; 0: no intervals
    confidence: float = 0.95  # of the intervals, and of the report's paired comparisons
    near_copy_distance: float = (
        0.1  # near_copy_rate: outputs within this word edit distance (over length) of the source
    )


@dataclass
class JudgeConfig:
    enabled: bool = False
    url: str | None = None  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    model: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"  # the environment variable holding the key (never the key itself)
    tasks: list[str] = field(default_factory=lambda: ["simplification"])
    max_examples: int = 20
    timeout_s: float = 60.0


@dataclass
class ScopeConfig:
    c: float = 1.0  # inverse regularisation strength of the logistic regression
    threshold: float = 0.5  # P(in scope) at or above which a question is answered


GGUF_TYPES = ("f32", "f16", "q8_0", "q4_k_m")


@dataclass
class ExportConfig:
    tasks: list[str] = field(default_factory=list)  # generative tasks to export (opt-in; none by default)
    types: list[str] = field(default_factory=lambda: ["f16", "q8_0"])  # of f32, f16, q8_0, q4_k_m
    ollama: str = "q8_0"  # the type the Modelfile serves


@dataclass
class PrivacyConfig:
    phi: str = "warn"  # what prepare does with a possible identifier (medtune.privacy): error | warn | redact


@dataclass
class Params:
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    seed: int = 42
    eval: EvalConfig = field(default_factory=EvalConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    scope: ScopeConfig = field(default_factory=ScopeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


def validate(raw: dict[str, Any], source: str = PARAMS_FILE) -> DictConfig:
    """Check `raw` against the schema and return it typed; raise `ConfigError` naming the bad key."""
    schema = OmegaConf.structured(Params)
    try:
        _check_raw(raw, schema, source)
        cfg = OmegaConf.merge(schema, raw)
        missing = sorted(OmegaConf.missing_keys(cfg))
    except OmegaConfBaseException as err:
        raise _config_error(err, source) from None
    except RecursionError:  # OmegaConf merges nested lists and mappings recursively
        raise ConfigError("-", f"{source} nests lists or mappings too deeply") from None
    if missing:
        raise ConfigError(missing[0], f"is required but missing in {source}")
    _check_choices(cfg)
    _check_counts(cfg)
    _check_export(cfg.export, cfg.tasks)
    _check_train(cfg.train, "train")
    for task in cfg.tasks:
        train_config(cfg, task)  # each task's own train overrides, refused here rather than in its train stage
    return cfg


def _check_choices(cfg: DictConfig) -> None:
    """Keys that name one of a few things, checked before any stage runs (else the first stage to read one fails)."""
    if cfg.model.weights.dtype not in WEIGHT_DTYPES:
        dtype = cfg.model.weights.dtype
        raise ConfigError("model.weights.dtype", f"unknown dtype {dtype!r}; use {', '.join(WEIGHT_DTYPES)}")
    from medtune.data import check_task  # light modules: datasets and the scoring libraries load only when used
    from medtune.metrics import check_metric_names

    for name, task in cfg.tasks.items():
        if task.kind not in KINDS:
            raise ConfigError(f"tasks.{name}.kind", f"unknown kind {task.kind!r}; use {' or '.join(KINDS)}")
        if "{prompt}" not in task.prompt_template:
            raise ConfigError(f"tasks.{name}.prompt_template", f"{task.prompt_template!r} must contain {{prompt}}")
        check_task(task, f"tasks.{name}")
        check_metric_names(task.metrics, f"tasks.{name}.metrics")  # else evaluate would, after the whole training
    if cfg.judge.enabled and not (cfg.judge.url and cfg.judge.model):
        raise ConfigError(
            "judge.url", "set judge.url and judge.model (an OpenAI-compatible endpoint) or judge.enabled=false"
        )
    if cfg.privacy.phi not in PHI_POLICIES:
        raise ConfigError("privacy.phi", f"unknown policy {cfg.privacy.phi!r}; use {', '.join(PHI_POLICIES)}")


def _check_train(train: DictConfig, key: str) -> None:
    if train.launcher not in LAUNCHERS:
        raise ConfigError(f"{key}.launcher", f"unknown launcher {train.launcher!r}; use {' or '.join(LAUNCHERS)}")
    if train.attn_implementation not in ATTENTION:
        raise ConfigError(
            f"{key}.attn_implementation",
            f"unknown attention {train.attn_implementation!r}; use {', '.join(ATTENTION)}",
        )
    if train.logging_steps < 1:
        raise ConfigError(f"{key}.logging_steps", f"must be 1 or more, not {train.logging_steps}")
    _check_interval(train.eval_steps, f"{key}.eval_steps")
    if train.checkpoint_steps != 0:
        _check_interval(train.checkpoint_steps, f"{key}.checkpoint_steps", " or 0 for none")
    if train.checkpoint_steps >= 1 and train.checkpoint_steps % train.logging_steps:  # fractions are rounded up to one
        raise ConfigError(
            f"{key}.checkpoint_steps",
            f"must be 0 or a multiple of logging_steps ({train.logging_steps}), not {train.checkpoint_steps:g}: "
            "a run resumed from a checkpoint then logs the same loss curve as one that was never stopped",
        )
    if train.eval_max_examples is not None and train.eval_max_examples < 1:
        raise ConfigError(
            f"{key}.eval_max_examples", f"must be 1 or more (or null for all), not {train.eval_max_examples}"
        )


def _check_interval(value: float, key: str, otherwise: str = "") -> None:
    """How often training does something: every N optimizer steps (a whole number) or every fraction of an epoch
    (above 0, below 1; medtune.training.interval_steps). 2.5 is neither: refused, not silently rounded."""
    if value <= 0 or (value >= 1 and not float(value).is_integer()):
        raise ConfigError(
            key,
            f"must be a whole number of steps (1 or more) or a fraction of an epoch (above 0, below 1){otherwise}, "
            f"not {value:g}",
        )


def _check_counts(cfg: DictConfig) -> None:
    """Example and record limits are counts: a negative one would silently drop examples from the end
    (`examples[:-1]`) instead of failing."""
    limits = {"eval.max_examples": cfg.eval.max_examples, "judge.max_examples": cfg.judge.max_examples}
    for name, task in cfg.tasks.items():
        limits[f"tasks.{name}.data.max_records"] = task.data.max_records
        limits.update({f"tasks.{name}.data.split_max_records.{s}": n for s, n in task.data.split_max_records.items()})
    for key, value in limits.items():
        if value is not None and value < 1:
            raise ConfigError(key, f"must be 1 or more (or null for all), not {value}")
    if cfg.eval.bootstrap_samples < 0:
        samples = cfg.eval.bootstrap_samples
        raise ConfigError("eval.bootstrap_samples", f"must be 0 (no intervals) or more, not {samples}")
    if not 0 <= cfg.eval.near_copy_distance < 1:
        raise ConfigError(
            "eval.near_copy_distance", f"must be 0 or more and below 1, not {cfg.eval.near_copy_distance:g}"
        )
    if not 0 < cfg.eval.confidence < 1:
        raise ConfigError("eval.confidence", f"must be above 0 and below 1 (0.95: 95%), not {cfg.eval.confidence:g}")


def _check_raw(raw: Any, schema: DictConfig | ListConfig | None, source: str, key: str = "") -> None:
    """What OmegaConf would report without naming the key, or accept: a value where a section or a list belongs
    (`train: 5`, `metrics: {}`), a list or mapping where text belongs inside one (`labels: [[O]]`,
    `columns: {prompt: [a]}`), a key that is not text (`1:`, `null:`, a date), NaN or Infinity (`.nan`, `.inf`)."""

    def fail(where: str, problem: str) -> ConfigError:
        return ConfigError(where, f"{problem} (in {source})")

    if isinstance(schema, DictConfig) and raw is not None and not isinstance(raw, dict):
        raise fail(key, f"must be a section of keys, not {type(raw).__name__} {raw!r}")
    if isinstance(schema, ListConfig) and raw is not None and not isinstance(raw, list):
        raise fail(key, f"must be a list, not {type(raw).__name__} {raw!r}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise fail(key, f"must be a finite number, not {raw}")
    if not isinstance(raw, dict | list):
        return
    element = schema._metadata.element_type if schema is not None else Any
    for name, value in raw.items() if isinstance(raw, dict) else enumerate(raw):
        where = f"{key}[{name}]" if isinstance(raw, list) else f"{key}.{name}" if key else str(name)
        if isinstance(raw, dict) and not isinstance(name, str):
            raise fail(where, f"a key must be text, not {type(name).__name__} {name!r}")
        if element in SCALARS and isinstance(value, dict | list):
            raise fail(where, f"must be {SCALARS[element]}, not {type(value).__name__} {value!r}")
        _check_raw(value, _schema_child(schema, name) if isinstance(raw, dict) else None, source, where)


def _check_export(export: DictConfig, tasks: DictConfig) -> None:
    """The export stage runs once per export.tasks entry on that task's merged model, so each must be a generative
    task of this run; its types must be GGUF types medtune writes."""
    for name in export.tasks:
        if name not in tasks or tasks[name].kind != "sft":
            generative = ", ".join(t for t in tasks if tasks[t].kind == "sft") or "none"
            raise ConfigError("export.tasks", f"{name!r} is not a generative task of this run (those: {generative})")
    for gguf_type in export.types:
        if gguf_type not in GGUF_TYPES:
            raise ConfigError("export.types", f"unknown GGUF type {gguf_type!r}; use {', '.join(GGUF_TYPES)}")
    if "q4_k_m" in export.types and "f16" not in export.types:
        raise ConfigError("export.types", "q4_k_m is quantized from the f16 file: list f16 in export.types too")
    if export.ollama not in export.types:
        raise ConfigError("export.ollama", f"{export.ollama!r} is not in export.types {list(export.types)}")


def load_params(path: str | Path = PARAMS_FILE) -> DictConfig:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("-", f"{path} not found; run `medtune params` in the project root") from None
    except UnicodeDecodeError as err:
        raise ConfigError("-", f"{path} is not valid UTF-8 (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError("-", f"{path} is not valid YAML: {err}") from None
    except RecursionError:  # PyYAML reads nested lists and mappings recursively
        raise ConfigError("-", f"{path} nests lists or mappings too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError("-", f"{path} must hold a mapping at the top level")
    return validate(raw, str(path))


def train_config(params: DictConfig, task: str) -> DictConfig:
    """The global `train` config with the task's own `train` overrides applied (unknown keys are refused)."""
    try:
        train = OmegaConf.merge(params.train, task_config(params, task).train)
    except OmegaConfBaseException as err:
        error = _config_error(err, PARAMS_FILE)
        raise ConfigError(f"tasks.{task}.{error.key}", error.problem) from None
    _check_train(train, f"tasks.{task}.train")
    own = task_config(params, task).train
    if "max_length" in own:
        raise ConfigError(
            f"tasks.{task}.train.max_length",
            f"is not read: set the task's tokens per example with tasks.{task}.max_length "
            "(train.max_length sets one length for every task)",
        )
    if "accelerate_config" in own:  # dvc.yaml tracks the file of train.accelerate_config, the same for every task
        raise ConfigError(
            f"tasks.{task}.train.accelerate_config",
            "is one file for the whole run: set train.accelerate_config (a task may still set its own launcher)",
        )
    return train


def quantization_of(peft: DictConfig) -> DictConfig | None:
    """The `peft.quantization` block the method trains with: None for lora, 4 or 8 bits for qlora.
    Checked here, without bitsandbytes, so `medtune plan` refuses what training would refuse."""
    if peft.method not in ("lora", "qlora"):
        raise ConfigError("peft.method", f"unknown method {peft.method!r}; use peft=lora or peft=qlora")
    if peft.method == "lora":
        if peft.quantization is not None:
            raise ConfigError("peft.quantization", "is only used with peft.method=qlora (select it with peft=qlora)")
        return None
    if peft.quantization is None or peft.quantization.bits not in (4, 8):
        raise ConfigError("peft.quantization.bits", "qlora needs 4 or 8 bits (see conf/peft/qlora.yaml)")
    return peft.quantization


def max_length(params: DictConfig, task: str) -> int:
    """Tokens per example of a task: `train.max_length` when set (one knob for every task, e.g. the length a GPU
    was planned for with `medtune plan`), else the task's own `max_length`."""
    own = task_config(params, task).max_length
    return own if params.train.max_length is None else params.train.max_length


def task_config(params: DictConfig, task: str) -> DictConfig:
    """The config of one task, with a clear error for a task name that is not configured."""
    if task not in params.tasks:
        known = ", ".join(params.tasks) or "none"
        raise ConfigError(f"tasks.{task}", f"no such task in {PARAMS_FILE} (configured: {known})")
    return params.tasks[task]


def compose_params(root: str | Path = ".", overrides: list[str] | None = None, out: str | Path | None = None) -> Path:
    """Compose conf/ with Hydra into params.yaml exactly as `dvc exp run` does, and validate the result.
    `out` writes it elsewhere (`medtune plan` composes into a temporary file and leaves params.yaml alone).
    A composition that fails validation is not written: the params.yaml that was there stays as it was."""
    from dvc.utils.hydra import (
        compose_and_dump,  # DVC's own writer, so `dvc exp run` output is byte-identical
    )
    from hydra.errors import HydraException

    from medtune.io import atomic_write_text

    root = Path(root).resolve()
    out = root / PARAMS_FILE if out is None else Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        composed = Path(tmp) / PARAMS_FILE
        try:
            compose_and_dump(str(composed), str(root / CONF_DIR), None, "config", str(root), overrides or [])
        except HydraException as err:  # an override of a key or group that conf/ does not have
            quoted = re.search(r"(?:override|find) '([^']+)'", str(err))
            raise ConfigError(quoted.group(1) if quoted else CONF_DIR, " ".join(str(err).split())) from None
        text = composed.read_text(encoding="utf-8")
    validate(yaml.safe_load(text), str(out))
    atomic_write_text(out, text)
    return out


def _config_error(err: OmegaConfBaseException, source: str) -> ConfigError:
    """Turn an OmegaConf error into a ConfigError with the full key and, for a typo, the closest valid key."""
    key = getattr(err, "full_key", None) or "-"
    msg = getattr(err, "msg", None) or str(err).splitlines()[0]
    parent_keys = _schema_keys_at(key.rsplit(".", 1)[0] if "." in key else "")
    leaf = key.rsplit(".", 1)[-1]
    hint = ""
    if leaf not in parent_keys:
        close = difflib.get_close_matches(leaf, parent_keys, n=1)
        if close:
            hint = f"; did you mean `{close[0]}`?"
        elif parent_keys:
            hint = f"; valid keys here: {', '.join(sorted(parent_keys))}"
    return ConfigError(key, f"{msg.splitlines()[0]} (in {source}){hint}")


def _schema_keys_at(dotted: str) -> list[str]:
    """Valid keys of the schema node at `dotted` (task names under `tasks` are free)."""
    node: Any = OmegaConf.structured(Params)
    for part in [p for p in dotted.split(".") if p]:
        node = _schema_child(node, part)
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _schema_child(node: Any, key: str) -> DictConfig | ListConfig | None:
    """The schema section or list at `node[key]` (a map of free names, such as columns, is a section), or None
    where `key` holds a single value. A section that defaults to null (peft.quantization) has its keys in its type."""
    if not isinstance(node, DictConfig) or node._is_none():
        return None
    if key not in node:  # tasks.<name>: the element type of a map of sections
        element = node._metadata.element_type
        return _schema_of(element) if is_dataclass(element) else None
    child = node._get_node(key)
    if isinstance(child, DictConfig) and child._is_none() and is_dataclass(child._metadata.ref_type):
        return _schema_of(child._metadata.ref_type)
    return child if isinstance(child, DictConfig | ListConfig) else None


@functools.cache
def _schema_of(dataclass_type: type) -> DictConfig:
    """The read-only schema of a config dataclass, built once: OmegaConf takes milliseconds per dataclass."""
    schema = OmegaConf.structured(dataclass_type)
    OmegaConf.set_readonly(schema, True)
    return schema
