"""QLoRA on CPU: the frozen base is stored in 4 bits by bitsandbytes, the adapter trains, and merging it into the
full-precision base gives a standalone model. Runs on the tiny model (bitsandbytes 0.50 has CPU kernels)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import a_peft, a_train, link_project
from medtune.checks import check_peft
from medtune.config import compose_params, load_params
from medtune.errors import ConfigError
from medtune.modeling import merge_adapter
from medtune.plan import PROJECTIONS
from medtune.training import load_base_for_training, train_adapter

pytest.importorskip("bitsandbytes")

LABELS = ["O", "B-Disease", "I-Disease"]
TARGETS = list(PROJECTIONS)  # LoRA on every projection of the Llama blocks


@pytest.fixture(scope="module")
def qlora_params(tmp_path_factory):
    """params.yaml as `-S peft=qlora` composes it."""
    root = link_project(tmp_path_factory.mktemp("project"), "conf")
    return load_params(compose_params(root, ["peft=qlora", "model=tiny-random"]))


def _examples(kind: str, n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        ids = torch.randint(3, 250, (12,), generator=g).tolist()
        labels = ids if kind == "sft" else torch.randint(0, len(LABELS), (12,), generator=g).tolist()
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def test_qlora_config_selects_4bit_nf4_with_double_quantization(qlora_params):
    peft = qlora_params.peft
    assert (peft.method, peft.r, peft.alpha) == ("qlora", 8, 16)  # the LoRA settings are shared with peft=lora
    assert (peft.quantization.bits, peft.quantization.quant_type, peft.quantization.double_quant) == (4, "nf4", True)


@pytest.mark.parametrize("kind", ["sft", "token_classification"])
def test_the_base_is_quantized_and_the_heads_stay_full_precision(kind, qlora_params, tiny_model_dir):
    import bitsandbytes as bnb

    train = a_train()
    model = load_base_for_training(kind, tiny_model_dir, LABELS, qlora_params.peft, train, seed=0)
    full = load_base_for_training(kind, tiny_model_dir, LABELS, a_peft(), train, seed=0)

    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    head = model.lm_head if kind == "sft" else model.score
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
    assert model.get_memory_footprint() < full.get_memory_footprint()


@pytest.mark.parametrize(("kind", "bits"), [("sft", 4), ("token_classification", 4), ("token_classification", 8)])
def test_qlora_trains_an_adapter_that_merges_into_the_full_precision_base(
    kind, bits, qlora_params, tiny_model_dir, tmp_path
):
    peft = qlora_params.peft.copy()
    peft.quantization.bits = bits
    train = a_train(max_steps=6, batch_size=4, lr=1e-2, eval_steps=3, bf16=False)

    metrics, _ = train_adapter(
        kind=kind,
        base_dir=tiny_model_dir,
        train_examples=_examples(kind, 16, seed=1),
        eval_examples=_examples(kind, 4, seed=2),
        peft=peft,
        train=train,
        lora_targets=TARGETS,
        labels=LABELS,
        seed=0,
        adapter_dir=tmp_path / "adapter",
        live_dir=tmp_path / "live",
        work_dir=tmp_path / "work",
    )

    assert metrics["steps"] == 6 and math.isfinite(metrics["eval_loss"])
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any(tensor.abs().max() > 0 for name, tensor in adapter.items() if "lora_B" in name)  # B starts at zero
    probe = [e["input_ids"] for e in _examples(kind, 2, seed=3)]
    merged, check = merge_adapter(tiny_model_dir, tmp_path / "adapter", probe, LABELS if kind != "sft" else None)
    assert check["relative_logit_diff"] < 1e-5
    assert not any("lora" in name for name in merged.state_dict())
    assert all(p.dtype == torch.float32 for p in merged.parameters())


def test_lora_with_a_quantization_block_and_unknown_methods_are_refused(qlora_params):
    peft = qlora_params.peft.copy()
    peft.method = "lora"
    with pytest.raises(ConfigError, match=r"peft\.quantization.*peft=qlora"):
        check_peft(peft)
    peft.method = "dora"
    with pytest.raises(ConfigError, match=r"peft\.method.*not 'dora'"):
        check_peft(peft)


def test_gradients_equal_those_of_the_dequantized_model_even_after_an_evaluation(qlora_params, tiny_model_dir):
    """The trainer evaluates between steps; that must not change how later training steps backpropagate."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    train = a_train()
    peft = qlora_params.peft.copy()
    peft.quantization.compute_dtype = "float32"  # so the only difference left is the one under test
    quantized = load_base_for_training("sft", tiny_model_dir, LABELS, peft, train, seed=0)
    reference = load_base_for_training("sft", tiny_model_dir, LABELS, a_peft(), train, 0)
    for name, module in quantized.named_modules():  # the fp32 reference holds exactly the 4-bit weights' values
        if isinstance(module, bnb.nn.Linear4bit):
            values = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            reference.get_submodule(name).weight.data.copy_(values)
    models = []
    for base in (quantized, reference):
        torch.manual_seed(0)
        model = get_peft_model(base, LoraConfig(r=4, target_modules=TARGETS, lora_dropout=0.0, init_lora_weights=False))
        models.append(model)
    x = torch.tensor([_examples("sft", 1, seed=4)[0]["input_ids"]] * 2)
    for model in models:  # what trainer.evaluate() does
        model.eval()
        with torch.no_grad():
            model(input_ids=x)
        model.train()
        model(input_ids=x, labels=x).loss.backward()

    grads = [{n: p.grad for n, p in model.named_parameters() if p.requires_grad} for model in models]
    first_layer_lora_a = next(n for n in grads[1] if "layers.0." in n and "lora_A" in n)
    assert grads[1][first_layer_lora_a].abs().max() > 0
    for name, reference_grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], reference_grad, rtol=1e-4, atol=1e-6)
