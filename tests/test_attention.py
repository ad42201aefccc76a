"""What a token classifier's tokens attend to (`tasks.<task>.attention`): causal, as the decoder was trained, or
bidirectional, so the first word of an entity sees the words after it; and DoRA (`peft.use_dora`). Each mode holds in
training, in the merged model and when that model is loaded back by the path `medtune predict` uses."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import a_peft, a_task, a_train
from medtune.generation import predict_tags
from medtune.modeling import load_adapter, load_model, load_token_classifier, load_tokenizer, merge_adapter
from medtune.predict import Predictor
from medtune.tasks import tokenize_tagged
from medtune.training import train_adapter

LABELS = ["O", "B-Disease", "I-Disease"]
SENTENCES = [
    (["Known", "type", "2", "diabetes", "."], ["O", "B-Disease", "I-Disease", "I-Disease", "O"]),
    (["No", "chest", "pain", "today"], ["O", "B-Disease", "I-Disease", "O"]),
    (["Asthma", "since", "childhood"], ["B-Disease", "O", "O"]),
    (["Renal", "failure", "was", "ruled", "out"], ["B-Disease", "I-Disease", "O", "O", "O"]),
]


def tagged_examples(tokenizer) -> list[dict]:
    label_ids = {label: i for i, label in enumerate(LABELS)}
    records = [{"id": str(i), "tokens": t, "tags": g} for i, (t, g) in enumerate(SENTENCES)]
    return [e for r in records for e in tokenize_tagged(tokenizer, r, label_ids, 64)]


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_bidirectional_attention_sees_to_the_right_and_causal_does_not(tiny_model_dir, implementation):
    sentence = torch.tensor([[5, 6, 7, 8, 9, 10]])
    later_word_changed = sentence.clone()
    later_word_changed[0, 4] = 20
    padded, mask = torch.tensor([[5, 6, 7, 8, 9, 10, 0, 0]]), torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    for mode, sees_right in (("causal", False), ("bidirectional", True)):
        model = load_token_classifier(tiny_model_dir, LABELS, attention=mode, attn_implementation=implementation)
        with torch.no_grad():
            logits = model(input_ids=sentence).logits[0]
            changed = model(input_ids=later_word_changed).logits[0]
            with_padding = model(input_ids=padded, attention_mask=mask).logits[0, :6]
        assert (
            (logits[:4] - changed[:4]).abs().max().item() > 1e-4 if sees_right else torch.equal(logits[:4], changed[:4])
        )
        torch.testing.assert_close(with_padding, logits, atol=1e-5, rtol=1e-5)  # padding is still masked
        assert model.config.medtune_attention == mode


@pytest.mark.parametrize(
    ("attention", "use_dora"), [("causal", False), ("bidirectional", False), ("bidirectional", True)]
)
def test_the_merged_model_loaded_back_tags_as_the_adapter_model(tiny_model_dir, tmp_path, attention, use_dora):
    tokenizer = load_tokenizer(tiny_model_dir)
    examples = tagged_examples(tokenizer)
    peft = a_peft(use_dora=use_dora)
    train_adapter(
        kind="token_classification",
        base_dir=tiny_model_dir,
        train_examples=examples * 4,
        eval_examples=examples,
        peft=peft,
        train=a_train(max_steps=6, batch_size=4, lr=2e-2, logging_steps=1, eval_steps=6, bf16=False),
        lora_targets=["q_proj", "k_proj", "v_proj", "o_proj"],
        labels=LABELS,
        seed=0,
        adapter_dir=tmp_path / "adapter",
        live_dir=tmp_path / "live",
        work_dir=tmp_path / "work",
        attention=attention,
    )
    assert json.loads((tmp_path / "adapter/adapter_config.json").read_text())["use_dora"] == use_dora

    probe = [e["input_ids"] for e in examples]
    merged, check = merge_adapter(tiny_model_dir, tmp_path / "adapter", probe, LABELS, attention)
    assert check["relative_logit_diff"] < 1e-5
    merged.save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")
    assert json.loads((tmp_path / "merged/config.json").read_text())["medtune_attention"] == attention

    # the predict path: the task says nothing about attention (causal by default), the merged model remembers it
    loaded = Predictor(a_task(kind="token_classification", labels=LABELS), tmp_path / "merged").model
    adapter = load_adapter(load_token_classifier(tiny_model_dir, LABELS, attention=attention), tmp_path / "adapter")
    ids = [str(i) for i in range(len(SENTENCES))]
    with torch.no_grad():
        for e in examples:
            batch = torch.tensor([e["input_ids"]])
            torch.testing.assert_close(
                loaded(input_ids=batch).logits, adapter(input_ids=batch).logits, atol=1e-5, rtol=0
            )
    assert predict_tags(loaded, examples, LABELS, 2, ids) == predict_tags(adapter, examples, LABELS, 2, ids)


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_full_fine_tuning_trains_every_weight_and_the_saved_model_tags_as_trained(tiny_model_dir, tmp_path, attention):
    tokenizer = load_tokenizer(tiny_model_dir)
    examples = tagged_examples(tokenizer)
    results, _ = train_adapter(
        kind="token_classification",
        base_dir=tiny_model_dir,
        train_examples=examples * 4,
        eval_examples=examples,
        peft=a_peft("full"),
        train=a_train(max_steps=6, batch_size=4, lr=1e-2, logging_steps=1, eval_steps=6),
        lora_targets=["q_proj"],  # not used: nothing is low-rank
        labels=LABELS,
        seed=0,
        adapter_dir=tmp_path / "trained",
        live_dir=tmp_path / "live",
        work_dir=tmp_path / "work",
        attention=attention,
    )
    assert results["trainable_share"] == 1 and not (tmp_path / "trained/adapter_config.json").exists()
    base, trained = load_file(tiny_model_dir / "model.safetensors"), load_file(tmp_path / "trained/model.safetensors")
    backbone = [name for name in base if name.startswith("model.layers.")]
    assert backbone and all(not torch.equal(base[name], trained[name]) for name in backbone)  # every layer moved

    # what the merge stage does with a whole model (load it, save it with the tokenizer), then the predict path
    load_model(tmp_path / "trained", LABELS, attention).save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")
    loaded = Predictor(a_task(kind="token_classification", labels=LABELS), tmp_path / "merged").model
    fine_tuned = load_token_classifier(tmp_path / "trained", LABELS, attention=attention).eval()
    ids = [str(i) for i in range(len(SENTENCES))]
    assert loaded.config.medtune_attention == attention
    assert predict_tags(loaded, examples, LABELS, 2, ids) == predict_tags(fine_tuned, examples, LABELS, 2, ids)
