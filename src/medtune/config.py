"""params.yaml: its schema, reading and checking it, and regenerating it from conf/ with Hydra.

The dataclasses below are the single list of valid keys and their types (conf/ holds every default): a misspelled
key in conf/, params.yaml or a `dvc exp run -S` override fails with the closest valid key suggested, instead of
being ignored. OmegaConf does the type checking, medtune.checks the values; we turn their errors into `ConfigError`s
that say what to do. The few functions after `validate` say what a checked config means (a task's merged training
config, its tokens per example, its carved splits).
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

# The choices of the keys that name one of a few things; medtune.checks refuses any other value when params are read.
KINDS = ("sft", "token_classification")  # the two model heads: causal LM, token classifier
# what a token classifier's tokens attend to: the words before them (the decoder as trained), or the whole sentence
ATTENTION_MODES = ("causal", "bidirectional")
WEIGHT_SOURCES = ("gguf-package", "hub", "tiny-random")
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")  # what models/base may store its weights in
PEFT_METHODS = ("lora", "qlora", "full")  # full: every weight trained, no adapter
LAUNCHERS = ("python", "accelerate")
ATTENTION = ("eager", "sdpa", "flash_attention_2")  # transformers' attn_implementation values medtune trains with
PHI_POLICIES = ("error", "warn", "redact")
GGUF_TYPES = ("f32", "f16", "q8_0", "q4_k_m")
EXPORT_MODELS = ("merged", "aligned")  # the folders under models/ export reads a task's model from
# TRL 1.16 DPOConfig.loss_type: DPO's sigmoid, IPO, hinge (SLiC), ... (several at once are summed with weights)
DPO_LOSSES = (
    *("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard"),
    *("aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"),
)
SPLITS = ("train", "validation", "test")
DATA_SOURCES = ("local", "hub")
ON_INVALID = ("error", "drop")  # a bad record stops prepare, or is skipped and counted
ON_LEAKAGE = ("warn", "error")  # the same text in two named splits: counted in stats.json and logged, or refused
ORPHAN_INSIDE = ("error", "repair")  # an I-X without B-X before it is refused, or read as B-X
TAG_SCHEMES = ("iob2", "iobes")  # the tag scheme of tokens/tags data; iobes (S-X, E-X) is read as IOB2
IOB2_TAG = re.compile(r"^(O|[BI]-[A-Za-z][\w-]*)$")  # a label of a token classification task
SFT_FIELDS = ("prompt", "response")  # the fields of a generative task's records
TOKEN_LAYOUTS = ({"tokens", "tags"}, {"text", "entities"})  # the two column layouts of token_classification data
# The names a task may list under `metrics:` (medtune.metrics computes them; a test keeps the two lists equal).
METRIC_NAMES = (
    *("rouge_l", "bleu", "sari", "fkgl_output", "fkgl_source", "fkgl_delta"),
    *("format_adherence", "disclaimer_rate", "copy_rate", "near_copy_rate"),
    *("quantities_preserved", "quantities_altered", "quantities_invented"),
    *("medications_preserved", "medications_invented"),
)
SCALARS = {str: "text", int: "an integer", float: "a number", bool: "true or false"}


# The schema of params.yaml. Every default lives in conf/ (conf/config.yaml and its groups); a field here is MISSING
# where conf/ must give it, and None only where leaving it unset means something (the comment says what).
@dataclass
class WeightsConfig:
    source: str = MISSING  # WEIGHT_SOURCES
    package: str | None = None  # gguf-package: the installed distribution that ships the file
    file: str | None = None  # gguf-package: path of the .gguf file inside that distribution
    hub_id: str | None = None  # hub
    revision: str | None = None  # hub: None is the main branch
    path: str | None = None  # hub: a local model folder, which wins over hub_id
    dtype: str = MISSING  # WEIGHT_DTYPES
    # tiny-random only: the seed and shape of the random model (hidden_size a multiple of 64: bitsandbytes' CPU
    # 4-bit kernels quantize in blocks of 64)
    init_seed: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None


@dataclass
class ArchitectureConfig:
    """The transformer's shape, as its config.json states it: all `medtune plan` needs to estimate memory."""

    hidden_size: int = MISSING
    intermediate_size: int = MISSING
    num_hidden_layers: int = MISSING
    num_attention_heads: int = MISSING
    num_key_value_heads: int = MISSING
    vocab_size: int = MISSING
    tie_word_embeddings: bool = MISSING
    head_dim: int | None = None  # None: hidden_size / num_attention_heads (Mistral-Nemo: 128, not 5120 / 32)


def head_dim(arch: Any) -> int:
    """Width of one attention head: stated by the model when it is not hidden_size / heads (Mistral-Nemo).
    `arch` is an ArchitectureConfig or a transformers model config, whose field may be missing or None: the tiny
    model's LlamaConfig, the GGUF writer (medtune.export) and the memory plan (medtune.plan) must agree on it."""
    return getattr(arch, "head_dim", None) or arch.hidden_size // arch.num_attention_heads


@dataclass
class ModelConfig:
    name: str = MISSING
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    lora_targets: list[str] = MISSING
    allow_pickle: bool = MISSING  # load pickle (.bin/.pt) weights; pickle can run code, so only from a trusted source
    architecture: ArchitectureConfig | None = None  # None: read from weights.path/config.json (medtune plan)


@dataclass
class QuantizationConfig:
    bits: int = MISSING  # 4 (QLoRA) or 8 (LLM.int8)
    quant_type: str = MISSING  # 4-bit only: nf4 | fp4
    double_quant: bool = MISSING  # 4-bit only: quantize the quantization constants too
    compute_dtype: str = MISSING  # dtype the 4-bit weights are dequantized to for each matmul


@dataclass
class PeftConfig:
    method: str = MISSING  # PEFT_METHODS
    r: int | None = MISSING  # the adapter's settings: null for full fine-tuning, which has no adapter
    alpha: int | None = MISSING
    dropout: float | None = MISSING
    use_dora: bool | None = MISSING  # peft's DoRA: LoRA's update split into a direction and a trained magnitude
    quantization: QuantizationConfig | None = None  # qlora: how bitsandbytes stores the frozen base; None for lora


@dataclass
class TrainConfig:
    epochs: float = MISSING
    lr: float = MISSING
    lr_scheduler: str = MISSING
    warmup_steps: float = MISSING
    weight_decay: float = MISSING
    batch_size: int = MISSING
    grad_accum: int = MISSING
    max_steps: int = MISSING
    bf16: bool = MISSING
    gradient_checkpointing: bool = MISSING
    logging_steps: int = MISSING
    # eval_steps and checkpoint_steps: a whole number is optimizer steps, a fraction (< 1) a share of an epoch
    eval_steps: float = MISSING
    eval_max_examples: int | None = MISSING  # validation while training on a seeded sample of this many; None: all
    checkpoint_steps: float = MISSING  # a resumable checkpoint every N steps (a multiple of logging_steps); 0: none
    max_length: int | None = MISSING  # tokens per example for every task; None: each task's own max_length
    padding_free: bool = MISSING  # one row per batch, no padding (see medtune.training.make_batch)
    group_by_length: bool = MISSING  # batches of similar lengths: less padding
    attn_implementation: str = MISSING  # ATTENTION
    torch_compile: bool = MISSING  # torch.compile the model before training
    launcher: str = MISSING  # LAUNCHERS: one process, or `accelerate launch` with accelerate_config
    accelerate_config: str = MISSING


@dataclass
class DataConfig:
    source: str = MISSING  # DATA_SOURCES
    path: str | None = MISSING  # what DVC tracks for the task: the data file, or the folder holding its split files
    hub_id: str | None = MISSING
    revision: str | None = MISSING
    hub_split: str = MISSING  # hub: the split read as train when `splits` names none
    # the task's own splits: name -> a file or list of files inside the `path` folder (local), or a hub split name;
    # the splits not named are carved from train by seed (`split`)
    splits: dict[str, Any] = MISSING
    split_max_records: dict[str, int] = MISSING  # e.g. {validation: 500}: a seeded sample
    on_leakage: str = MISSING  # ON_LEAKAGE
    columns: dict[str, str] = MISSING  # our field -> source column
    id_column: str | None = MISSING  # None: ids are made from the record number
    max_records: int | None = MISSING  # keep a seeded random sample of this many records; None: all
    tag_names: list[str] | None = MISSING  # token_classification: names of integer tags (Hugging Face ner_tags)
    tag_scheme: str = MISSING  # TAG_SCHEMES
    on_invalid: str = MISSING  # ON_INVALID
    provenance: str = MISSING  # who wrote or published the data, and its terms; goes into the model card


@dataclass
class SplitConfig:
    validation: float = MISSING
    test: float = MISSING


@dataclass
class GenerationConfig:
    max_new_tokens: int = MISSING


@dataclass
class TaskConfig:
    kind: str = MISSING  # KINDS
    description: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    system: str = MISSING
    prompt_template: str = MISSING  # the user turn; {prompt} is the record's prompt field
    max_length: int = MISSING
    metrics: list[str] = MISSING  # METRIC_NAMES
    labels: list[str] = MISSING  # token_classification: the IOB2 label list (O first)
    orphan_inside: str = MISSING  # ORPHAN_INSIDE
    attention: str = MISSING  # ATTENTION_MODES; token_classification may read the whole sentence (bidirectional)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: dict[str, Any] = MISSING  # overrides of the global `train` config for this task


@dataclass
class GeneralSetConfig:
    path: str = MISSING  # the forgetting check's general instructions (medtune.forgetting), a DVC dependency
    max_examples: int | None = MISSING  # None: every item; 0: no forgetting check
    max_new_tokens: int = MISSING


@dataclass
class EvalConfig:
    batch_size: int = MISSING
    max_examples: int | None = MISSING  # None: the whole test split
    bootstrap_samples: int = MISSING  # resamples of the test examples for each metric's interval; 0: no intervals
    confidence: float = MISSING  # of the intervals, and of the report's paired comparisons
    near_copy_distance: float = MISSING  # near_copy_rate: outputs within this word edit distance (over length)
    general: GeneralSetConfig = field(default_factory=GeneralSetConfig)  # the forgetting check of generative tasks


@dataclass
class JudgeConfig:
    enabled: bool = MISSING
    url: str | None = MISSING  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    model: str | None = MISSING
    api_key_env: str | None = MISSING  # the environment variable holding the key (never the key itself)
    tasks: list[str] = MISSING
    max_examples: int = MISSING
    timeout_s: float = MISSING


@dataclass
class ScopeConfig:
    c: float = MISSING  # inverse regularisation strength of the logistic regression
    threshold: float = MISSING  # P(in scope) at or above which a question is answered


@dataclass
class ExportConfig:
    tasks: list[str] = MISSING  # generative tasks to export (opt-in)
    types: list[str] = MISSING  # GGUF_TYPES
    ollama: str = MISSING  # the type the Modelfile serves
    model: str = MISSING  # EXPORT_MODELS: the task's SFT model (merged) or its preference-tuned one (aligned)


@dataclass
class HarnessConfig:
    tasks: list[str] = MISSING  # generative tasks whose base and merged models are benchmarked (opt-in)
    benchmarks: Any = MISSING  # a list name of `lists`, or lm-eval task names
    lists: dict[str, list[str]] = MISSING  # ready benchmark lists: name -> lm-eval task names
    num_fewshot: int = MISSING
    limit: int | None = MISSING  # questions per benchmark (a quick run); None: all
    batch_size: int = MISSING
    include_path: str = MISSING  # a folder of lm-eval task YAMLs of the user's own (lm-eval's --include_path)


@dataclass
class PairsConfig:
    samples: int = MISSING  # answers the SFT model samples per training prompt
    max_prompts: int | None = MISSING  # a seeded sample of the training prompts; None: all
    temperature: float = MISSING
    top_p: float = MISSING
    margin: float = MISSING  # best and worst must differ by more than this score (medtune.preference)
    validation_share: float = MISSING  # given pairs without a validation file: this share of train, carved by seed


@dataclass
class AlignConfig:
    tasks: list[str] = MISSING  # generative tasks to align after SFT (opt-in)
    given: list[str] = MISSING  # of those, the tasks whose pairs are the user's own (data/preference/<task>/)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    beta: float = MISSING  # TRL's beta: how far the aligned model may move from the SFT model
    loss_type: list[str] = MISSING  # DPO_LOSSES (TRL's loss_type; several are summed)
    max_length: int | None = MISSING  # tokens of prompt + answer; None: the task's max_length
    train: dict[str, Any] = MISSING  # overrides of the task's training config for the DPO run (lr, epochs, ...)


@dataclass
class PrivacyConfig:
    phi: str = MISSING  # PHI_POLICIES: what prepare does with a possible identifier (medtune.privacy)


@dataclass
class Params:
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)  # free names; an empty map is a run of no task
    seed: int = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    scope: ScopeConfig = field(default_factory=ScopeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


def validate(raw: dict[str, Any], source: str = PARAMS_FILE) -> Params:
    """Check `raw` against the schema, then every value (medtune.checks), and return it typed; raise `ConfigError`
    naming the bad key."""
    from medtune.checks import check_params  # checks reads this module's schema and choices

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
    check_params(cfg)
    return cfg


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


def load_params(path: str | Path = PARAMS_FILE) -> Params:
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


def train_config(params: Params, task: str) -> TrainConfig:
    """The global `train` config with the task's own `train` overrides applied (unknown keys are refused)."""
    return merge_train(params.train, task_config(params, task).train, f"tasks.{task}.train")


def align_train_config(params: Params, task: str) -> TrainConfig:
    """The task's training config (`train_config`) with `align.train` applied: the DPO run's."""
    return merge_train(train_config(params, task), params.align.train, "align.train")


def align_max_length(params: Params, task: str) -> int:
    """Tokens of prompt + answer in a preference pair: `align.max_length`, else the task's (`max_length`)."""
    return params.align.max_length or max_length(params, task)


def merge_train(base: TrainConfig, overrides: Any, key: str) -> TrainConfig:
    """`base` with `overrides` merged over it; an unknown key or a wrong type is refused as `<key>.<name>`."""
    try:
        return OmegaConf.merge(base, overrides)
    except OmegaConfBaseException as err:
        error = _config_error(err, PARAMS_FILE)  # error.key: train.<name>, whichever train config `base` is
        raise ConfigError(f"{key}.{error.key.removeprefix('train.')}", error.problem) from None


def max_length(params: Params, task: str) -> int:
    """Tokens per example of a task: `train.max_length` when set (one knob for every task, e.g. the length a GPU
    was planned for with `medtune plan`), else the task's own `max_length`."""
    own = task_config(params, task).max_length
    return own if params.train.max_length is None else params.train.max_length


def task_config(params: Params, task: str) -> TaskConfig:
    """The config of one task, with a clear error for a task name that is not configured."""
    if task not in params.tasks:
        known = ", ".join(params.tasks) or "none"
        raise ConfigError(f"tasks.{task}", f"no such task in {PARAMS_FILE} (configured: {known})")
    return params.tasks[task]


def split_files(value: Any) -> list:
    """The files (or the hub split name) a `data.splits` entry names: one, or a list."""
    return [value] if isinstance(value, str) else list(value) if isinstance(value, list | ListConfig) else []


def carved_shares(task: TaskConfig) -> dict[str, float]:
    """The shares of the splits carved from train by seed: validation and test, unless the task names them."""
    return {name: task.split[name] for name in ("validation", "test") if name not in task.data.splits}


def conf_section(schema: type, file: str | Path, key: str | None = None, **values: Any) -> Any:
    """One section of the config as a conf/ file gives it, `values` over it, typed by its `schema` dataclass: how
    tests and benchmarks build, say, the tiny model's weights without composing a whole params.yaml, so that the
    defaults stay in conf/ alone. E.g. `conf_section(WeightsConfig, "conf/model/tiny-random.yaml", "weights")`."""
    node = OmegaConf.load(file)
    node = node[key] if key else node
    given = {name: value for name, value in node.items() if name != "defaults"}  # a Hydra defaults list: not a key
    return OmegaConf.merge(OmegaConf.structured(schema), given, values)


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
    if key not in node.keys():  # noqa: SIM118 (`in` skips MISSING keys) tasks.<name>: a map of sections
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
