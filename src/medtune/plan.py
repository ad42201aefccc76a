"""`medtune plan`: the peak GPU memory of a LoRA / QLoRA / full fine-tuning run, estimated from the config alone.

Training memory is a sum of parts that each follow from the architecture and a few settings, so a run can be
sized before any weights are downloaded:

- base weights: frozen, in the dtype models/base stores them (`model.weights.dtype`), or the decoder projections
  in a bitsandbytes format and the rest in fp32 (qlora);
- LoRA weights, their gradients and AdamW's two moment estimates (all in the adapter dtype: fp32 with peft);
  with peft=full, every weight in fp32 with its gradient and two moments (16 bytes a parameter);
- activations: what autograd keeps from the forward pass for the backward pass, per decoder layer
  (`layer_activation_bytes`), with gradient checkpointing only each layer's input plus one layer recomputed;
  for medtune's padded batches by default, or its padding-free rows (`train.padding_free`);
- the logits of the LM head and the loss over them, large for a big vocabulary (every position counted);
- a fixed allowance for the CUDA context and the allocator (`CUDA_OVERHEAD`).

Preference tuning (`medtune plan --stage align`, medtune.alignment) is the same sum for TRL's DPOTrainer: a batch
holds both answers of each pair (twice the sequences), the frozen base is the merged SFT model, which merge saves
in fp32, TRL's LM head computes log-probabilities in chunks (the logits are counted once, in the compute dtype: an
upper bound), and the reference model is the same weights with the adapter off, run without gradients: no weights
of its own, and at most one layer's activations alive at a time (`reference`).

The activation model follows what transformers' Llama/Mistral code, peft and bitsandbytes keep for backward.
tests/test_plan.py checks it against the tensors autograd saves in medtune's own training forward pass and against
peak memory other projects published; benchmarks/plan_memory.py against a CPU training run's measured memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medtune.config import (
    ArchitectureConfig,
    ModelConfig,
    Params,
    align_max_length,
    align_train_config,
    head_dim,
    max_length,
    train_config,
)
from medtune.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

GIB = 2**30
# The CUDA context (~0.5 GiB with lazily loaded kernels on CUDA 12), cuBLAS/cuDNN workspaces and the caching
# allocator's slack between reserved and allocated blocks: what nvidia-smi shows beyond torch's allocations.
CUDA_OVERHEAD = 1 * GIB
GPU_SIZES_GB = (16, 24, 40, 80)
# Bytes per weight of each `model.weights.dtype` (modeling.py's dtypes).
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# The projections of a Llama/Mistral decoder layer, by the input they read: the attention input (q, k, v), the
# attention output (o), the MLP input (gate, up) and the MLP's inner activation (down).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
INPUT_GROUPS = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))


@dataclass(frozen=True)
class TrainingSetup:
    """What decides the memory of a training run. The defaults are medtune's (transformers + peft)."""

    architecture: ArchitectureConfig
    lora_targets: tuple[str, ...]
    rank: int
    batch_size: int
    seq_len: int
    weight_bytes: int = 4  # every base weight bitsandbytes does not quantize: `training_weight_bytes` (4: SmolLM2)
    quant_bits: int | None = None  # 4 (NF4) or 8 (LLM.int8) for the decoder layers' projections; None: no quantization
    double_quant: bool = True
    autocast: bool = True  # train.bf16: matmuls autocast to bf16; False: each op runs in its inputs' dtype
    adapter_bytes: int = 4  # peft keeps LoRA weights in fp32; their gradients and AdamW states follow their dtype
    lora_dropout: bool = False
    padding_free: bool = False  # False: a row per example and a padding mask; True: one row, a block-diagonal mask
    attention: str = "sdpa"  # train.attn_implementation: eager also keeps every layer's attention matrix
    gradient_checkpointing: bool = False
    loss: str = "fp32"  # see logits_bytes
    full: bool = False  # peft=full: every weight trained in fp32 (no LoRA: lora_targets empty, rank 0)
    reference: bool = False  # preference tuning: a no-grad pass of the reference (the adapter off) per batch


@dataclass(frozen=True)
class MemoryPlan:
    """The parts of peak training memory, in bytes."""

    base_weights: int
    lora_weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_checkpointed: int  # the layers' inputs plus `recomputed_layer`
    recomputed_layer: int
    logits: int
    overhead: int
    gradient_checkpointing: bool  # which of the two totals the run will see
    reference: int = 0  # preference tuning's reference pass: one layer's activations, without gradients

    def total(self, checkpointing: bool | None = None) -> int:
        """Peak memory with or without gradient checkpointing (default: as the run is configured).

        Without checkpointing every layer's activations are alive when the loss is computed. With it, the backward
        pass frees the logits before it recomputes the first layer, so only the larger of the two counts.
        """
        checkpointing = self.gradient_checkpointing if checkpointing is None else checkpointing
        fixed = self.base_weights + self.lora_weights + self.gradients + self.optimizer + self.overhead + self.reference
        if not checkpointing:
            return fixed + self.activations + self.logits
        layer_inputs = self.activations_checkpointed - self.recomputed_layer
        return fixed + layer_inputs + max(self.recomputed_layer, self.logits)


def projection_shapes(arch: ArchitectureConfig) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each projection in a decoder layer. Grouped-query attention gives k and v
    only `num_key_value_heads` heads."""
    h, i = arch.hidden_size, arch.intermediate_size
    q, kv = arch.num_attention_heads * head_dim(arch), arch.num_key_value_heads * head_dim(arch)
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def layer_projection_parameters(arch: ArchitectureConfig) -> int:
    """Weights of all decoder layers' projections: the part of the model bitsandbytes quantizes."""
    per_layer = sum(n_in * n_out for n_in, n_out in projection_shapes(arch).values())
    return arch.num_hidden_layers * per_layer


def unquantized_parameters(arch: ArchitectureConfig) -> int:
    """Weights outside the projections: token embeddings, the LM head (unless tied to the embeddings) and the RMSNorm
    scales (two per layer and a final one). bitsandbytes leaves embeddings and norms alone, and medtune keeps the
    LM head out of quantization (`training.FULL_PRECISION_MODULES`), as the QLoRA paper does."""
    embeddings = arch.vocab_size * arch.hidden_size
    head = 0 if arch.tie_word_embeddings else embeddings
    return embeddings + head + (2 * arch.num_hidden_layers + 1) * arch.hidden_size


def parameter_count(arch: ArchitectureConfig) -> int:
    """All parameters of the causal LM, tied weights counted once (what `model.parameters()` sums to)."""
    return layer_projection_parameters(arch) + unquantized_parameters(arch)


def lora_parameter_count(arch: ArchitectureConfig, targets: tuple[str, ...], rank: int) -> int:
    """Trainable LoRA parameters: A (rank x in) and B (out x rank) per targeted projection, in every layer."""
    shapes = projection_shapes(arch)
    unknown = sorted(set(targets) - set(shapes))
    if unknown:
        raise ConfigError(
            "model.lora_targets", f"the planner knows Llama-style projections ({', '.join(PROJECTIONS)}), not {unknown}"
        )
    return arch.num_hidden_layers * sum(rank * sum(shapes[name]) for name in targets)


def quantized_bytes(n_in: int, n_out: int, bits: int, double_quant: bool) -> float:
    """Bytes of one projection stored by bitsandbytes.

    4-bit (NF4/FP4): half a byte per weight plus one absmax per block of 64 weights, an fp32 (4.5 bits per weight in
    all) or, with double quantization, an 8-bit code whose own fp32 scale is shared by 256 blocks (~4.127 bits).
    8-bit (LLM.int8): one byte per weight plus an fp32 scale per output row.
    """
    n = n_in * n_out
    if bits == 8:
        return n + 4 * n_out
    blocks = n / 64
    absmax = blocks * (1 + 4 / 256) if double_quant else blocks * 4
    return n / 2 + absmax


def training_weight_bytes(dtype: str, method: str) -> int:
    """Bytes per weight training.py holds the frozen base in, for the weights bitsandbytes does not quantize.

    `load_base_for_training` loads models/base as stored (`model.weights.dtype`: fp32 for SmolLM2, bf16 for the
    7B-12B models), so plain LoRA keeps that dtype. For qlora, peft's `prepare_model_for_kbit_training` then upcasts
    every parameter that is not 4/8-bit (embeddings, LM head, norms) to fp32, whatever was stored; full fine-tuning
    loads every weight in fp32 (the optimizer's master copy).
    """
    return 4 if method in ("qlora", "full") else DTYPE_BYTES[dtype]


def compute_bytes(setup: TrainingSetup) -> int:
    """Bytes per activation: 2 under bf16 autocast or over 16-bit weights (the residual stream and the matmuls run
    in the weights' dtype), 4 when weights and matmuls are fp32."""
    return 2 if setup.autocast or setup.weight_bytes == 2 else 4


def autocast_copies(setup: TrainingSetup) -> bool:
    """Whether a frozen fp32 matmul weight (the LM head, a projection without LoRA) keeps a 16-bit copy: under bf16
    autocast (train.bf16) over weights stored in fp32, autocast casts the weight for every matmul and the matmul
    keeps the copy to compute its input's gradient. 16-bit weights are used as they are. (fp16-stored weights under
    bf16 autocast would be copied too; no conf/model stores fp16, and the planner does not tell fp16 from bf16.)"""
    return setup.autocast and setup.weight_bytes == 4


def projection_weight_bytes(setup: TrainingSetup, name: str) -> int:
    """Bytes per weight of an unquantized frozen projection: a LoRA target under bf16 autocast is stored in bf16
    (`training.skip_autocast_copies`), any other projection keeps `weight_bytes`."""
    return 2 if setup.autocast and name in setup.lora_targets and not setup.full else setup.weight_bytes


def attention_mask_elements(setup: TrainingSetup) -> int:
    """Elements of the boolean attention mask transformers builds once and hands to SDPA in every layer.

    Padded batches (the default): batch x seq x seq, as soon as a row holds padding; with none (batch 1, or equal
    lengths) transformers lets SDPA apply `is_causal` and builds no mask, so this is the upper bound.
    Padding-free: one row of t = batch x seq tokens and its t x t block-diagonal mask (none for a single example).
    """
    if setup.batch_size == 1:
        return 0
    tokens = setup.batch_size * setup.seq_len
    return tokens * tokens if setup.padding_free else setup.batch_size * setup.seq_len**2


def base_weight_bytes(setup: TrainingSetup) -> int:
    """The frozen base model: the decoder projections at `projection_weight_bytes` or in bitsandbytes' format, and
    the rest (embeddings, LM head, norms) at `weight_bytes`."""
    arch = setup.architecture
    if setup.quant_bits is None:
        shapes = projection_shapes(arch).items()
        per_layer = sum(n_in * n_out * projection_weight_bytes(setup, name) for name, (n_in, n_out) in shapes)
    else:
        per_layer = sum(
            quantized_bytes(n_in, n_out, setup.quant_bits, setup.double_quant)
            for n_in, n_out in projection_shapes(arch).values()
        )
    return round(arch.num_hidden_layers * per_layer + unquantized_parameters(arch) * setup.weight_bytes)


def layer_activation_bytes(setup: TrainingSetup) -> int:
    """Bytes one decoder layer keeps for the backward pass, for t = batch x sequence tokens.

    Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models") count
    s*b*h*(34 + 5*a*s/h) bytes per layer for a GPT layer trained in 16 bits; the 5*a*s/h part is the s x s
    attention matrix, which SDPA's flash and memory-efficient kernels (transformers' default) never store.
    A frozen-base LoRA layer of Llama shape keeps, in the compute dtype unless said otherwise:

    - each RMSNorm's input upcast to fp32 (4 bytes), twice;
    - SDPA's query, key, value and output, k and v repeated to every query head (as transformers does when
      there is a mask, LitGPT and torchtune always);
    - the attention mask (`attention_mask_elements`) in the compute dtype: SDPA converts the boolean mask to an
      additive one in each layer and its kernel keeps it;
    - the MLP's gate output, its SiLU and the up output (bitsandbytes returns its input's dtype: fp32 in qlora);
    - the inputs of projections something differentiates through (`projection_input_bytes`);
    - with `autocast_copies`, the bf16 copy of every frozen fp32 projection weight (2 bytes each);
    - with eager attention, each layer's attention matrix: the fp32 softmax and the probabilities in the compute
      dtype (`eager_attention_bytes`); SDPA keeps no matrix, but keeps the additive mask.
    """
    arch, a = setup.architecture, compute_bytes(setup)
    t, h, i = setup.batch_size * setup.seq_len, arch.hidden_size, arch.intermediate_size
    mlp_bytes = setup.weight_bytes if setup.quant_bits is not None else a
    total = 2 * t * h * 4 + 4 * t * arch.num_attention_heads * head_dim(arch) * a + 3 * t * i * mlp_bytes
    total += eager_attention_bytes(setup) if setup.attention == "eager" else attention_mask_elements(setup) * a
    group_input_bytes = (setup.weight_bytes, a, setup.weight_bytes, mlp_bytes)  # norm outputs, SDPA out, SiLU*up
    for group, input_bytes in zip(INPUT_GROUPS, group_input_bytes, strict=True):
        total += projection_input_bytes(setup, group, input_bytes)
    if setup.quant_bits is None and autocast_copies(setup):
        shapes = projection_shapes(arch).items()
        total += 2 * sum(n_in * n_out for name, (n_in, n_out) in shapes if name not in setup.lora_targets)
    if setup.full:  # a trained RMSNorm scale needs the normalised input for its gradient: twice per layer
        total += 2 * t * h * setup.weight_bytes
    return round(total)


def eager_attention_bytes(setup: TrainingSetup) -> int:
    """What eager attention keeps per layer: the softmax output in fp32 (for its backward) and, under bf16 compute,
    its copy in the compute dtype (for the matmul with v); one matrix per query head and row, a padding-free row's
    over all its tokens."""
    rows, length = (1, setup.batch_size * setup.seq_len) if setup.padding_free else (setup.batch_size, setup.seq_len)
    a = compute_bytes(setup)
    return rows * setup.architecture.num_attention_heads * length**2 * (4 + (a if a != 4 else 0))


def projection_input_bytes(setup: TrainingSetup, group: tuple[str, ...], input_bytes: float) -> float:
    """What the projections reading one tensor keep of it. A frozen torch linear keeps only its weight, but a LoRA A
    matrix and bitsandbytes' 4/8-bit matmul keep their input. They share the tensor unless each makes its own copy
    in the compute dtype: peft casts the input to the adapter's dtype (and autocast back), LoRA dropout draws a new
    tensor (plus a 1-byte mask), bitsandbytes casts an fp32 input to its compute dtype. Each LoRA A's r-wide
    output is kept too. LoRA keeps these in the compute dtype under autocast (which casts them back for the
    matmul), in the adapter's dtype without it. Under autocast, plain LoRA skips peft's cast
    (`training.skip_autocast_copies`): a LoRA A then copies only an input autocast has to cast. Fully fine-tuned
    projections each keep their input (their weight's gradient needs it)."""
    a, t = compute_bytes(setup), setup.batch_size * setup.seq_len
    lora_bytes = a if setup.autocast else setup.adapter_bytes
    n_in = projection_shapes(setup.architecture)[group[0]][0]
    if setup.full:  # every projection keeps its input for its weight's gradient; autocast casts it for each one
        return t * n_in * (len(group) * a if input_bytes != a else input_bytes)
    lora = sum(name in setup.lora_targets for name in group)
    quantized = len(group) if setup.quant_bits is not None else 0
    peft_casts = setup.adapter_bytes != a and not (setup.autocast and setup.quant_bits is None)
    lora_copies = setup.lora_dropout or peft_casts or input_bytes != a
    quantized_copies = input_bytes != a
    copied = lora * lora_copies * lora_bytes + quantized * quantized_copies * a
    shared = (lora and not lora_copies) or (quantized and not quantized_copies)
    masks = lora if setup.lora_dropout else 0
    return t * (n_in * (copied + shared * input_bytes + masks) + lora * setup.rank * lora_bytes)


def activation_bytes(setup: TrainingSetup, checkpointing: bool) -> int:
    """All layers' activations plus the final norm's fp32 input and the boolean attention mask transformers builds
    once for all layers. With gradient checkpointing a layer keeps only its input (the residual stream, at
    `weight_bytes`) and the backward pass recomputes one layer at a time."""
    arch = setup.architecture
    t = setup.batch_size * setup.seq_len
    shared = t * arch.hidden_size * 4 + attention_mask_elements(setup)
    if checkpointing:
        kept_inputs = arch.num_hidden_layers * t * arch.hidden_size * setup.weight_bytes
        return round(kept_inputs + layer_activation_bytes(setup) + shared)
    return round(arch.num_hidden_layers * layer_activation_bytes(setup) + shared)


def logits_bytes(setup: TrainingSetup) -> int:
    """The LM head's logits (t x vocab) and what the loss keeps of them, at every position: an upper bound, since
    medtune's `make_batch` passes `logits_to_keep` so the head and `completion_loss` run only at the positions that
    predict a response token in some row of the batch (the prompt's share of the batch is not in the config).

    - `fp32`: transformers' loss and medtune's `completion_loss` upcast the logits to fp32; when backward starts,
      the fp32 log-softmax cross-entropy kept, its incoming and its outgoing gradient are alive: 12 bytes (more
      than the forward's compute-dtype logits + fp32 copy + log-softmax);
    - `compute`: logits and log-softmax in the compute dtype, cross-entropy in chunks so that its gradients are
      chunk-sized (LitGPT's chunked cross-entropy in bf16-true);
    - `fused`: only the logits (a fused or torch.compile'd cross-entropy recomputes the softmax in backward).
    With `autocast_copies` the head's matmul also keeps its bf16 weight copy.
    """
    arch, a = setup.architecture, compute_bytes(setup)
    per_logit = {"fp32": 12, "compute": 2 * a, "fused": a}
    if setup.loss not in per_logit:
        raise ValueError(f"loss must be one of {', '.join(per_logit)}, not {setup.loss!r}")
    head_copy = 2 * arch.vocab_size * arch.hidden_size if autocast_copies(setup) else 0
    return setup.batch_size * setup.seq_len * arch.vocab_size * per_logit[setup.loss] + head_copy


def plan_memory(setup: TrainingSetup, overhead: int = CUDA_OVERHEAD) -> MemoryPlan:
    """The memory plan of a training run; `overhead=0` gives what torch's allocator alone would report."""
    trained = trained_parameters(setup)
    weight_bytes = setup.weight_bytes if setup.full else setup.adapter_bytes
    return MemoryPlan(
        base_weights=base_weight_bytes(setup),
        lora_weights=0 if setup.full else trained * weight_bytes,
        gradients=trained * weight_bytes,
        optimizer=2 * trained * weight_bytes,
        activations=activation_bytes(setup, checkpointing=False),
        activations_checkpointed=activation_bytes(setup, checkpointing=True),
        recomputed_layer=layer_activation_bytes(setup),
        logits=logits_bytes(setup),
        overhead=overhead,
        gradient_checkpointing=setup.gradient_checkpointing,
        reference=layer_activation_bytes(setup) if setup.reference else 0,
    )


def trained_parameters(setup: TrainingSetup) -> int:
    """The parameters the optimizer updates: LoRA's, or every one with peft=full."""
    if setup.full:
        return parameter_count(setup.architecture)
    return lora_parameter_count(setup.architecture, setup.lora_targets, setup.rank)


def architecture_of(model: ModelConfig) -> ArchitectureConfig:
    """The model's shape: `model.architecture`; for the tiny random model its `weights.*` shape; else the config.json
    of a local `model.weights.path`. Raises ConfigError naming `model.architecture` when none of these exists."""
    if model.architecture is not None:
        return model.architecture
    if model.weights.source == "tiny-random":
        from medtune.modeling import tiny_random_architecture  # torch: only for the tiny model

        return tiny_random_architecture(model.weights)
    config_json = Path(model.weights.path or "") / "config.json"
    if model.weights.path and config_json.is_file():
        return architecture_from_config_json(config_json)
    raise ConfigError(
        "model.architecture",
        f"unknown for {model.name}: add an `architecture:` block with the values of the model's config.json to "
        f"conf/model/{model.name}.yaml, or point model.weights.path at a local copy of the model",
    )


def saved_weights_bytes(model: ModelConfig) -> int | None:
    """Bytes of the model's weights saved in `model.weights.dtype` (what the base stage writes), or None when its
    architecture is unknown (a hub model without an `architecture:` block in conf/model/)."""
    try:
        return parameter_count(architecture_of(model)) * DTYPE_BYTES[model.weights.dtype]
    except ConfigError:
        return None


def architecture_from_config_json(path: Path) -> ArchitectureConfig:
    """The ArchitectureConfig fields of a Hugging Face config.json (a missing kv head count means plain attention)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [name for name in fields if name not in config]
    if missing:
        raise ConfigError("model.architecture", f"{path} lacks {', '.join(missing)}: add an `architecture:` block")
    return ArchitectureConfig(
        **{name: config[name] for name in fields},
        num_key_value_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        tie_word_embeddings=config.get("tie_word_embeddings", False),
        head_dim=config.get("head_dim"),
    )


def setup_from_params(params: Params, stage: str = "train") -> tuple[TrainingSetup, str]:
    """medtune's training run as params.yaml configures it, and the task it is planned for: the one with the most
    tokens per batch (its `train` config, task overrides applied, times its max_length). `stage="align"` plans the
    preference tuning of the tasks in `align.tasks` instead (see the module's docstring)."""
    align = stage == "align"
    if align:
        names, config, length = list(params.align.tasks), align_train_config, align_max_length
        key, empty = "align.tasks", "align.tasks is empty, so there is no preference run to plan"
    else:
        names, config, length = list(params.tasks), train_config, max_length
        key, empty = "tasks", "no task is configured, so there is no training run to plan"
    if not names:
        raise ConfigError(key, empty)
    task = max(names, key=lambda name: config(params, name).batch_size * length(params, name))
    train, peft = config(params, task), params.peft
    quantization = peft.quantization  # None for lora (medtune.checks)
    weight_bytes = training_weight_bytes("float32" if align else params.model.weights.dtype, peft.method)
    full = peft.method == "full"
    setup = TrainingSetup(
        architecture=architecture_of(params.model),
        lora_targets=() if full else tuple(params.model.lora_targets),
        rank=0 if full else peft.r,
        batch_size=train.batch_size * (2 if align else 1),  # a pair's chosen and rejected answers
        seq_len=length(params, task),
        weight_bytes=weight_bytes,
        quant_bits=None if quantization is None else quantization.bits,
        double_quant=quantization is not None and quantization.double_quant,
        autocast=train.bf16,
        lora_dropout=not full and peft.dropout > 0,
        padding_free=train.padding_free and not align,  # DPOTrainer pads each pair's answers
        attention=train.attn_implementation,
        gradient_checkpointing=train.gradient_checkpointing,
        full=full,
        loss="fused" if align else "fp32",
        reference=align,
    )
    return setup, task


def fitting_gpus(total: int) -> dict[int, bool]:
    """Whether `total` bytes fit each common GPU size (an "N GB" card holds N GiB, e.g. 81920 MiB for 80 GB)."""
    return {size: total <= size * GIB for size in GPU_SIZES_GB}


def print_plan(plan: MemoryPlan, setup: TrainingSetup, title: str, console: Console) -> None:
    """The plan as a table of its parts (GiB), the GPUs it fits, and which total applies."""
    from rich.table import Table

    trained = trained_parameters(setup)
    tokens = setup.batch_size * setup.seq_len
    kept = "at most (TRL scores them in chunks)" if setup.reference else "all kept"
    table = Table(title=title)
    table.add_column("part")
    table.add_column("GiB", justify="right")
    table.add_column("what")
    rows = [
        ("base weights" if not setup.full else "weights (all trained)", plan.base_weights, _weights_note(setup)),
        *(
            []
            if setup.full
            else [("LoRA weights", plan.lora_weights, f"{trained:,} parameters, {8 * setup.adapter_bytes}-bit")]
        ),
        ("gradients", plan.gradients, f"one per trained parameter ({trained:,})"),
        ("optimizer state", plan.optimizer, "AdamW: two moments per trained parameter"),
        ("activations", plan.activations, "without gradient checkpointing"),
        ("activations (checkpointed)", plan.activations_checkpointed, "layer inputs + one layer recomputed"),
        ("logits and loss", plan.logits, f"{tokens:,} tokens x {setup.architecture.vocab_size:,} words, {kept}"),
        *(
            [("reference pass", plan.reference, "adapter off, no gradients: one layer at a time")]
            if setup.reference
            else []
        ),
        ("CUDA context + allocator", plan.overhead, "fixed allowance"),
        ("total", plan.total(checkpointing=False), "without gradient checkpointing"),
        ("total (checkpointed)", plan.total(checkpointing=True), "with it: logits or recomputed layer, not both"),
    ]
    for name, size, note in rows:
        table.add_row(name, f"{size / GIB:.2f}", note, style="bold" if name.startswith("total") else None)
    console.print(table)
    total = plan.total()
    fits = ", ".join(f"{size} GB {'yes' if ok else 'no'}" for size, ok in fitting_gpus(total).items())
    console.print(f"fits: {fits}")
    which = "with" if plan.gradient_checkpointing else "without"
    other = plan.total(not plan.gradient_checkpointing) / GIB
    console.print(
        f"train.gradient_checkpointing={str(plan.gradient_checkpointing).lower()}: the plan is the total {which} "
        f"checkpointing, {total / GIB:.2f} GiB ({other:.2f} GiB the other way)"
    )


def _weights_note(setup: TrainingSetup) -> str:
    """How the base weights are stored, in a few words."""
    arch = setup.architecture
    params = f"{parameter_count(arch) / 1e9:.2f}B parameters"
    rest = f"{8 * setup.weight_bytes:.0f}-bit"
    if setup.quant_bits is None:
        if all(projection_weight_bytes(setup, name) == setup.weight_bytes for name in PROJECTIONS):
            return f"{params}, {rest}"
        return f"{params}: LoRA-targeted projections 16-bit (bf16 autocast), the rest {rest}"
    fmt = "NF4" + (" + double quant" if setup.double_quant else "") if setup.quant_bits == 4 else "int8"
    return f"{params}: projections {fmt}, embeddings/head/norms {rest}"
