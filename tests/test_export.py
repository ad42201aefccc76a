"""GGUF export on the tiny model: what transformers (and llama.cpp, when installed) read back is the model we wrote."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from conftest import ROOT, a_task
from medtune import export
from medtune.config import validate
from medtune.errors import ConfigError, ModelError
from medtune.export import gguf_logit_check, ollama_modelfile, write_gguf
from medtune.modeling import MAX_RELATIVE_LOGIT_DIFF, check_logits, load_causal_lm, load_tokenizer
from stages.export import export_order

TEXT = "Take 500 mg paracetamol every 6 hours; no more than 4 g a day."


@pytest.fixture(scope="module")
def model_and_probe(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is anaemia?"}], add_generation_prompt=True, tokenize=False
    )
    return load_causal_lm(tiny_model_dir), [tokenizer(TEXT).input_ids, tokenizer(chat).input_ids]


def test_f32_round_trips_exactly(tiny_model_dir, model_and_probe, tmp_path):
    model, probe = model_and_probe
    write_gguf(tiny_model_dir, tmp_path / "m.gguf", "f32", name="medtune-test")
    check = gguf_logit_check(model, tmp_path / "m.gguf", probe)
    assert check["max_abs_logit_diff"] == 0.0 and check["top1_agreement"] == 1.0


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_f16_and_q8_0_read_back_within_their_tolerance(tiny_model_dir, model_and_probe, tmp_path, gguf_type):
    model, probe = model_and_probe
    file = tmp_path / f"m-{gguf_type}.gguf"
    write_gguf(tiny_model_dir, file, gguf_type, name="medtune-test")
    check = gguf_logit_check(model, file, probe)
    assert 0 < check["relative_logit_diff"] <= MAX_RELATIVE_LOGIT_DIFF[gguf_type]
    assert check["top1_agreement"] == 1.0


def test_without_the_rotary_row_order_the_check_catches_it(tiny_model_dir, tmp_path, monkeypatch):
    # random weights attend almost uniformly, which hides a wrong Q/K layout: sharpen the attention first
    model = load_causal_lm(tiny_model_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight *= 30
            layer.self_attn.k_proj.weight *= 30
    folder = shutil.copytree(tiny_model_dir, tmp_path / "sharp")
    model.save_pretrained(folder)
    probe = [load_tokenizer(folder)(TEXT).input_ids]
    write_gguf(folder, tmp_path / "right.gguf", "f32", name="medtune-test")
    assert gguf_logit_check(model, tmp_path / "right.gguf", probe)["max_abs_logit_diff"] == 0.0

    monkeypatch.setattr(export, "_llama_cpp_layout", lambda name, weight, config: weight)
    write_gguf(folder, tmp_path / "wrong.gguf", "f32", name="medtune-test")
    check = gguf_logit_check(model, tmp_path / "wrong.gguf", probe)
    assert check["relative_logit_diff"] > max(MAX_RELATIVE_LOGIT_DIFF.values())
    with pytest.raises(ModelError, match=r"^wrong.gguf read back differs .* by 0\.\d+ x .*\(allowed for f32: 1e-05\)"):
        check_logits(check, "f32", "wrong.gguf read back", "the merged model")  # as the export stage does


def test_q4_k_m_is_written_last_because_it_is_made_from_the_f16_file():
    assert export_order(["q4_k_m", "f16", "q8_0"]) == ["f16", "q8_0", "q4_k_m"]
    assert export_order(["q8_0", "f16"]) == ["q8_0", "f16"]


def test_the_tokenizer_and_chat_template_survive_the_round_trip(tiny_model_dir, tmp_path):
    write_gguf(tiny_model_dir, tmp_path / "m.gguf", "q8_0", name="medtune-test")
    ours, back = load_tokenizer(tiny_model_dir), AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    chat = ours.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert back(TEXT).input_ids == ours(TEXT).input_ids and back(chat).input_ids == ours(chat).input_ids
    assert back.chat_template == ours.chat_template and back.eos_token == "<|im_end|>"


def test_a_model_the_converter_does_not_cover_is_refused_by_name(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "scaled")
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="scaled: cannot export to GGUF: rope scaling.*convert_hf_to_gguf"):
        write_gguf(folder, tmp_path / "m.gguf", "f16", name="medtune-test")
    assert not (tmp_path / "m.gguf").exists()


def test_the_modelfile_carries_the_tasks_prompts_and_stops_at_the_end_of_turn(tiny_model_dir):
    task = a_task(system="You explain medical terms.", prompt_template="Explain: {prompt}")
    modelfile = ollama_modelfile("medtune-terminology", "terminology-q8_0.gguf", load_tokenizer(tiny_model_dir), task)
    assert "ollama create medtune-terminology -f Modelfile" in modelfile
    assert "FROM ./terminology-q8_0.gguf\n" in modelfile
    assert 'SYSTEM """You explain medical terms."""' in modelfile
    assert '{{ if eq .Role "user" }}Explain: {{ .Content }}{{ else }}{{ .Content }}{{ end }}<|im_end|>' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "PARAMETER temperature 0" in modelfile


@pytest.mark.parametrize(
    ("export_config", "message"),
    [
        ({"tasks": ["ner"]}, "export.tasks.*'ner' is not a generative task of this run .*qa"),
        ({"tasks": ["nope"]}, "'nope' is not a generative task"),
        ({"types": ["q5_0"]}, "export.types.*not 'q5_0'"),
        ({"types": ["q8_0", "q4_k_m"]}, "q4_k_m is quantized from the f16 file"),
        ({"types": ["f16"], "ollama": "q8_0"}, "export.ollama.*not in export.types"),
        ({"types": ["f16"], "ollama": "q5_0"}, "export.ollama.*'q5_0' is not in export.types"),
    ],
)
def test_bad_export_configs_are_refused(export_config, message):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())  # tasks qa, simplification, terminology, ner
    raw["export"].update(export_config)
    with pytest.raises(ConfigError, match=message):
        validate(raw)


def test_q4_k_m_made_by_llama_cpp_loads_and_generates(tiny_model_dir, model_and_probe, tmp_path, monkeypatch):
    llama_cpp = pytest.importorskip("llama_cpp", reason="the [export] extra (llama-cpp-python) is not installed")
    # llama-cpp-python 0.3.36 segfaults running quantized tensors through its repacked CPU (AMX) buffers on this
    # machine's CPU; the plain CPU buffers work (llama.cpp's --no-repack)
    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def no_repack():
        params = defaults()
        params.use_extra_bufts = False
        return params

    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_model_default_params", no_repack)
    model, probe = model_and_probe
    write_gguf(tiny_model_dir, tmp_path / "m-f16.gguf", "f16", name="medtune-test")
    export.quantize_with_llama_cpp(tmp_path / "m-f16.gguf", tmp_path / "m-q4_k_m.gguf")
    check = gguf_logit_check(model, tmp_path / "m-q4_k_m.gguf", probe)
    assert check["relative_logit_diff"] <= MAX_RELATIVE_LOGIT_DIFF["q4_k_m"]

    # llama.cpp itself, the program GGUF is for: same tokens, and its f16 logits match the model's
    f16 = llama_cpp.Llama(str(tmp_path / "m-f16.gguf"), n_ctx=128, logits_all=True, verbose=False)
    tokens = f16.tokenize(TEXT.encode(), add_bos=False, special=True)
    assert tokens == probe[0]
    f16.eval(tokens)
    want = model(input_ids=torch.tensor([tokens])).logits[0].detach().numpy()
    assert abs(f16.scores[: len(tokens)] - want).max() <= MAX_RELATIVE_LOGIT_DIFF["f16"] * abs(want).max()
    q4 = llama_cpp.Llama(str(tmp_path / "m-q4_k_m.gguf"), n_ctx=128, verbose=False)
    completion = q4.create_completion(TEXT, max_tokens=4, temperature=0.0)
    assert completion["usage"]["completion_tokens"] >= 1
