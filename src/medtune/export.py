"""Export a merged model for local serving: GGUF files (llama.cpp, Ollama) and an Ollama Modelfile.

The PyPI `gguf` package writes GGUF but has no Hugging Face converter (that script lives in the llama.cpp
repository, which cannot be installed from PyPI), so `write_gguf` is a small converter for the models medtune
ships: Llama architecture with a byte-level BPE tokenizer (SmolLM2, the tiny test model). Anything else is refused
with a pointer to llama.cpp's converter rather than written wrongly. q4_k_m needs llama.cpp's k-quant code, which
comes with the optional `llama-cpp-python` (the `[export]` extra) and is made from the f16 file.

Every file is checked by round trip (`gguf_logit_check`): transformers reads it back and its logits are compared
with the merged model's.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtune.config import TaskConfig, head_dim
from medtune.errors import ConfigError, ModelError
from medtune.modeling import compare_logits, probe_logits

_QUANT_BLOCK = 32  # q8_0 quantizes rows in blocks of 32 values; a narrower row stays f16, as llama.cpp does


def write_gguf(model_dir: Path, out_file: Path, gguf_type: str, name: str) -> None:
    """Write the model in `model_dir` (safetensors + tokenizer) as one GGUF file of type f32, f16 or q8_0."""
    import gguf
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    _check_supported(config, model_dir)
    writer = gguf.GGUFWriter(out_file, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_file_type(file_type.get(gguf_type, gguf.LlamaFileType.MOSTLY_Q8_0))
    _add_hyperparameters(writer, config, name)
    _add_tokenizer(writer, model_dir, config.vocab_size)
    for tensor_name, array, raw_dtype in _tensors(model_dir, config, gguf_type):
        writer.add_tensor(tensor_name, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _check_supported(config: Any, model_dir: Path) -> None:
    refuse = None
    if config.model_type != "llama":
        refuse = f"model type {config.model_type!r} (only Llama-architecture models are converted here)"
    elif (config.rope_parameters or {}).get("rope_type", "default") != "default":
        refuse = "rope scaling (not written by this converter)"
    elif getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        refuse = "bias terms in attention or MLP layers"
    else:
        tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        pre = tokenizer.get("pre_tokenizer") or {}
        if tokenizer["model"]["type"] != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
            refuse = "a tokenizer other than byte-level BPE with the GPT-2 split (e.g. SentencePiece)"
    if refuse is not None:
        raise ModelError(
            f"{model_dir}: cannot export to GGUF: {refuse}. Convert this model with llama.cpp's "
            "convert_hf_to_gguf.py instead (https://github.com/ggml-org/llama.cpp)."
        )


def _add_hyperparameters(writer: Any, config: Any, name: str) -> None:
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim(config))
    writer.add_rope_freq_base(float((config.rope_parameters or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)


def _add_tokenizer(writer: Any, model_dir: Path, vocab_size: int) -> None:
    """Tokens, their types, BPE merges, special token ids and the chat template. Special tokens are CONTROL,
    or llama.cpp splits `<|im_start|>` into pieces; add_bos_token is written from what the tokenizer does."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    special = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    added = {token.content for token in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:  # embedding rows beyond the tokenizer (padding to a round size)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            kind = gguf.TokenType.CONTROL if token in special else gguf.TokenType.USER_DEFINED
            types.append(kind if token in added else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the split our tokenizer.json does: byte-level with the GPT-2 regex
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)
    starts_with_bos = tokenizer.bos_token_id is not None and tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
    writer.add_add_bos_token(starts_with_bos)


def _tensors(model_dir: Path, config: Any, gguf_type: str) -> list[tuple[str, np.ndarray, Any]]:
    """(GGUF name, data, raw dtype or None) for every weight. 1-D tensors (norms) stay f32, as llama.cpp needs."""
    import gguf
    from safetensors.torch import load_file

    state = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(file))
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # llama.cpp reuses token_embd when there is no output tensor
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    out = []
    for hf_name, weight in state.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelError(f"{model_dir}: cannot export to GGUF: no GGUF name for tensor {hf_name!r}")
        array = _llama_cpp_layout(hf_name, weight.float(), config).numpy()
        if array.ndim == 1 or gguf_type == "f32":
            out.append((name, array.astype(np.float32), None))
        elif gguf_type == "q8_0" and array.shape[-1] % _QUANT_BLOCK == 0:
            q8 = gguf.GGMLQuantizationType.Q8_0
            out.append((name, gguf.quants.quantize(array, q8), q8))
        else:
            out.append((name, array.astype(np.float16), None))
    return out


def _llama_cpp_layout(hf_name: str, weight: torch.Tensor, config: Any) -> torch.Tensor:
    """llama.cpp applies rotary embeddings to interleaved pairs, Hugging Face to the two halves of each head; the
    Q and K rows are reordered to match (transformers' GGUF reader undoes exactly this)."""
    if hf_name.endswith("q_proj.weight"):
        heads = config.num_attention_heads
    elif hf_name.endswith("k_proj.weight"):
        heads = config.num_key_value_heads
    else:
        return weight
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, -1).transpose(1, 2).reshape(weight.shape)


def quantize_with_llama_cpp(f16_file: Path, out_file: Path) -> None:
    """q4_k_m from the f16 file, with llama.cpp's quantizer (needs `pip install -e ".[export]"`)."""
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(
            "export.types", 'q4_k_m needs llama-cpp-python: pip install -e ".[export]" (it compiles llama.cpp)'
        ) from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    with tempfile.TemporaryFile() as log, _stderr_to(log):  # llama.cpp prints a line per tensor to fd 2
        status = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(out_file).encode(), params)
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
    if status != 0:
        detail = "\n".join(tail)
        raise ModelError(f"llama.cpp could not quantize {f16_file} to q4_k_m (status {status}):\n{detail}")


@contextlib.contextmanager
def _stderr_to(file: Any) -> Iterator[None]:
    """Send the process's file descriptor 2 (where C libraries write) to `file` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def gguf_logit_check(model: Any, gguf_file: Path, probe: list[list[int]]) -> dict:
    """Load `gguf_file` with transformers and compare its logits with `model`'s on the `probe` sequences
    (`compare_logits`); also how often both pick the same top token, and the file's size."""
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32, trust_remote_code=False
    ).eval()
    want, got = probe_logits(model, probe), probe_logits(loaded, probe)
    return {
        **compare_logits(want, got),
        "top1_agreement": _top1_agreement(want, got),
        "size_mb": round(gguf_file.stat().st_size / 2**20, 1),
    }


def _top1_agreement(reference: list[torch.Tensor], candidate: list[torch.Tensor]) -> float:
    """The share of probe positions where both models' logits pick the same next token: what a quantized file's
    greedy decoding keeps of the original's, which the logit difference alone does not say."""
    same = sum((r.argmax(-1) == c.argmax(-1)).sum().item() for r, c in zip(reference, candidate, strict=True))
    return same / sum(len(r) for r in reference)


def ollama_modelfile(name: str, gguf_name: str, tokenizer: Any, task: TaskConfig) -> str:
    """An Ollama Modelfile: the task's system prompt, its user-turn template and greedy decoding, as evaluated.

    The template is written for ChatML models (SmolLM2, Qwen, ...); for any other chat format the TEMPLATE line is
    left out and Ollama reads the chat template stored in the GGUF file."""
    lines = [
        f"# Ollama Modelfile written by medtune. Serve: ollama create {name} -f Modelfile && ollama run {name}",
        f"FROM ./{gguf_name}",
    ]
    if task.system:
        lines.append(f'SYSTEM """{task.system}"""')
    if "<|im_start|>" in (tokenizer.chat_template or ""):
        user = task.prompt_template.replace("{prompt}", "{{ .Content }}")
        lines.append(
            'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
            f'{{{{ if eq .Role "user" }}}}{user}{{{{ else }}}}{{{{ .Content }}}}{{{{ end }}}}<|im_end|>\n'
            '{{ end }}<|im_start|>assistant\n"""'
        )
        stops = ["<|im_end|>", "<|im_start|>"]
    else:
        stops = [tokenizer.eos_token]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines += ["PARAMETER temperature 0", f"PARAMETER num_predict {task.generation.max_new_tokens}"]
    return "\n".join(lines) + "\n"
