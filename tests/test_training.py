"""Training internals on the tiny model: padded and padding-free batches score exactly what the examples score one
by one, a run shorter than the logging interval still writes its loss curves, and validations and checkpoints set
as a fraction of an epoch happen at the steps it works out to."""

from __future__ import annotations

import logging

import pytest
import torch
from peft import get_peft_model
from transformers import TrainerCallback

from conftest import a_peft, a_train, tiny_weights
from medtune.data import sample_records
from medtune.errors import TrainingError
from medtune.modeling import build_base_model, load_causal_lm, load_token_classifier
from medtune.plan import PROJECTIONS
from medtune.tasks import IGNORE_INDEX
from medtune.training import (
    completion_loss,
    interval_steps,
    load_base_for_training,
    lora_config,
    make_batch,
    steps_per_epoch,
    train_adapter,
    training_args,
)

TARGETS = list(PROJECTIONS)  # LoRA on every projection of the Llama blocks


def sft_examples(lengths: list[int], prompt: int = 4) -> list[dict]:
    """Examples like the tokenize stage's: the first `prompt` tokens are the prompt (label -100)."""
    g = torch.Generator().manual_seed(sum(lengths))
    examples = []
    for n in lengths:
        ids = torch.randint(3, 250, (n,), generator=g).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return examples


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("padding_free", [False, True])
def test_a_batch_has_the_loss_of_its_examples_scored_one_by_one(tiny_model_dir, padding_free, attention):
    model = load_causal_lm(tiny_model_dir).eval()
    model.set_attn_implementation(attention)  # train.attn_implementation: eager on CPU, sdpa on GPU
    examples = sft_examples([7, 12, 9])
    with torch.no_grad():
        one_by_one = [
            model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss for e in examples
        ]
        batch = make_batch(examples, causal=True, padding_free=padding_free)
        labels = batch.pop("labels")
        loss = completion_loss(model(**batch), labels)

    targets = [len(e["input_ids"]) - 4 for e in examples]
    expected = sum(loss * n for loss, n in zip(one_by_one, targets, strict=True)) / sum(targets)  # over all targets
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    # the LM head runs where a response token is predicted, not over the prompts
    if padding_free:
        assert batch["logits_to_keep"].numel() == sum(targets)
    else:  # positions shared by the rows: from the end of the prompts (4 tokens) to the longest example's end
        assert batch["logits_to_keep"].tolist() == list(range(3, 11))


def test_without_restarting_positions_packed_examples_would_see_each_other(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir).eval()
    batch = make_batch(sft_examples([7, 12, 9]), causal=True, padding_free=True)
    labels = batch.pop("labels")
    with torch.no_grad():
        separate = completion_loss(model(**batch), labels)
        batch["position_ids"] = torch.arange(labels.shape[1])[None]  # one long sequence
        leaking = completion_loss(model(**batch), labels)

    assert abs(leaking.item() - separate.item()) > 1e-3


def test_a_padding_free_token_classification_batch_gives_each_token_its_own_logits(tiny_model_dir):
    labels = ["O", "B-Disease", "I-Disease"]
    model = load_token_classifier(tiny_model_dir, labels).eval()
    examples = [{"input_ids": e["input_ids"], "labels": [0] * len(e["input_ids"])} for e in sft_examples([5, 8])]
    with torch.no_grad():
        one_by_one = torch.cat([model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples])
        batch = make_batch(examples, causal=False, padding_free=True)
        tags = batch.pop("labels")
        packed = model(**batch).logits[0]

    assert "logits_to_keep" not in batch and tags[0, 0] == 0  # every token keeps its tag
    torch.testing.assert_close(packed, one_by_one, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["sft", "token_classification"])
def test_the_base_trains_in_the_dtype_it_is_stored_in_and_what_trains_is_fp32(kind, tmp_path):
    """A 7B base stored in bf16 must not be upcast to fp32 (twice the memory); adapters and a new head train in fp32.
    It also trains with the attention implementation the config names."""
    build_base_model(tiny_weights(dtype="bfloat16"), tmp_path)
    peft, train = a_peft(), a_train(attn_implementation="eager")
    base = load_base_for_training(kind, tmp_path, ["O", "B-Disease", "I-Disease"], peft, train, seed=0)
    assert base.config._attn_implementation == "eager"
    model = get_peft_model(base, lora_config(peft, TARGETS, kind))

    frozen = {p.dtype for name, p in model.named_parameters() if not p.requires_grad and "score" not in name}
    trained = {name.split(".")[-2]: p.dtype for name, p in model.named_parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert set(trained.values()) == {torch.float32} and "default" in trained
    assert kind == "sft" or any("score" in name for name, p in model.named_parameters() if p.requires_grad)


VALIDATION = sft_examples([9, 10])


def train_tiny(base_dir, out, lengths=(10, 11, 12, 13, 14, 15, 16, 17), callbacks=None, **train_values) -> dict:
    """LoRA steps on the tiny model (batch 2, the loss logged every step unless set), outputs in `out`; the results."""
    train = a_train(**{"batch_size": 2, "logging_steps": 1, "eval_steps": 10, **train_values})
    results, _ = train_adapter(
        kind="sft",
        base_dir=base_dir,
        train_examples=sft_examples(list(lengths)),
        eval_examples=VALIDATION,
        peft=a_peft(),
        train=train,
        lora_targets=TARGETS,
        labels=[],
        seed=0,
        adapter_dir=out / "adapter",
        live_dir=out / "live",
        work_dir=out / "work",
        callbacks=callbacks,
    )
    return results


def test_a_run_shorter_than_the_logging_interval_still_writes_its_loss_curves(tiny_model_dir, tmp_path):
    results = train_tiny(tiny_model_dir, tmp_path, [10, 11, 12, 13], max_steps=2, logging_steps=5, bf16=False)

    curves = tmp_path / "live" / "plots" / "metrics"
    for curve in (curves / "loss.tsv", curves / "eval" / "loss.tsv"):
        header, *rows = curve.read_text().splitlines()
        assert header == "step\tloss" and rows[-1].startswith("2\t"), curve  # x is the training step
    assert results["steps"] == 2


@pytest.mark.parametrize("stored", ["float32", "bfloat16"])  # SmolLM2 / the 7B-12B models
def test_skipping_autocast_copies_trains_exactly_as_autocast_does(stored, tmp_path, monkeypatch, caplog):
    """The speed-up of `skip_autocast_copies` changes no number: autocast computes the same bf16 copies."""
    build_base_model(tiny_weights(dtype=stored), tmp_path / "base")
    caplog.set_level(logging.INFO, logger="medtune.training")
    cast = train_tiny(tmp_path / "base", tmp_path / "cast", max_steps=4, bf16=True)
    assert "skip repeated autocast casts: 14" in caplog.text  # 2 layers x 7 projections
    monkeypatch.setattr("medtune.training.skip_autocast_copies", lambda model: 0)
    autocast_only = train_tiny(tmp_path / "base", tmp_path / "autocast", max_steps=4, bf16=True)

    assert cast == autocast_only
    curve = "live/plots/metrics/loss.tsv"
    assert (tmp_path / "cast" / curve).read_text() == (tmp_path / "autocast" / curve).read_text()


def test_a_compiled_model_trains_exactly_as_the_eager_one(tiny_model_dir, tmp_path):
    """`train.torch_compile` (off by default: ~35 s of compiling here even for the tiny model) changes no number,
    with SDPA attention as train=gpu has it (compiled, the eager attention's softmax is fused and differs by 1e-7)."""
    from torch._dynamo.utils import counters

    counters.clear()
    sdpa = {"max_steps": 4, "bf16": False, "attn_implementation": "sdpa"}
    compiled = train_tiny(tiny_model_dir, tmp_path / "compiled", torch_compile=True, **sdpa)
    assert counters["stats"]["unique_graphs"] > 0  # dynamo did compile the model
    counters.clear()
    eager = train_tiny(tiny_model_dir, tmp_path / "eager", **sdpa)
    assert counters["stats"]["unique_graphs"] == 0

    assert compiled == eager


def test_a_diverging_run_stops_at_the_step_it_diverged_and_saves_no_adapter(tiny_model_dir, tmp_path):
    """An absurd learning rate: Adam's first update (size ~lr, whatever the clipped gradient) overflows the tiny
    model's activations and the next step's gradients are nan (lower ones only flatten its output to uniform)."""
    with pytest.raises(TrainingError, match=r"^step 2: .* nan or infinite.*learning rate \(1e\+20\) is too high"):
        train_tiny(tiny_model_dir, tmp_path, max_steps=8, lr=1e20, warmup_steps=0, bf16=False)
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize(
    ("examples", "batch_size", "grad_accum", "processes", "expected"),
    [
        (202, 8, 1, 1, 26),  # qa's sample data on train=cpu: 25 full batches and a short one
        (200, 8, 1, 1, 25),
        (202, 4, 4, 1, 13),  # train=gpu: 51 batches, the last step accumulates 3
        (202, 8, 1, 2, 13),  # two processes under accelerate take a batch each per step
        (3, 8, 4, 1, 1),  # fewer examples than a batch: still one step
    ],
)
def test_steps_per_epoch_counts_optimizer_steps(examples, batch_size, grad_accum, processes, expected):
    assert steps_per_epoch(examples, batch_size, grad_accum, processes) == expected


@pytest.mark.parametrize(
    ("every", "epoch_steps", "multiple_of", "expected"),
    [
        (0.5, 26, 1, 13),
        (0.25, 37, 1, 10),  # 9.25 steps: rounded up
        (0.14, 50, 1, 7),  # 0.14 * 50 is 7.000000000000001 in floats: not 8
        (0.01, 10, 1, 1),  # a tenth of a step: at least one
        (0.5, 26, 5, 15),  # checkpoints: 13 steps, rounded up to a multiple of logging_steps
        (0.5, 38, 5, 20),  # 19 -> 20
        (0.5, 40, 5, 20),  # 20 is a multiple already
        (0.01, 10, 5, 5),
        (20, 26, 5, 20),  # a whole number is a step count, whatever the epoch
        (7, 1000, 1, 7),
    ],
)
def test_an_interval_in_epochs_becomes_steps_rounded_up(every, epoch_steps, multiple_of, expected):
    steps = interval_steps(every, epoch_steps, multiple_of)
    assert steps == expected and isinstance(steps, int)


def test_whole_step_counts_give_the_training_arguments_they_gave_before_fractions_existed(tmp_path):
    def args(epoch_steps: int, **values) -> dict:
        return training_args(a_train(**values), 0, tmp_path, epoch_steps)

    every_20 = args(26, eval_steps=20, checkpoint_steps=20, logging_steps=5)
    assert (every_20["eval_steps"], every_20["save_strategy"], every_20["save_steps"]) == (20, "steps", 20)
    assert type(every_20["eval_steps"]) is int and type(every_20["save_steps"]) is int  # not 20.0 from the schema
    assert args(3, eval_steps=20, checkpoint_steps=20, logging_steps=5) == every_20  # the data size plays no part
    no_checkpoints = args(26, checkpoint_steps=0)
    assert (no_checkpoints["save_strategy"], no_checkpoints["save_steps"]) == ("no", 1)
    halves = args(26, eval_steps=0.5, checkpoint_steps=0.5, logging_steps=5)
    assert (halves["eval_steps"], halves["save_steps"]) == (13, 15)


def test_the_validation_sample_is_seeded_in_order_and_null_keeps_all():
    """Training validates on `data.sample_records` of the validation split, as prepare samples `max_records`."""
    examples = [{"id": f"qa-{i}"} for i in range(50)]
    ids = [e["id"] for e in sample_records(examples, 10, seed=42)]

    assert len(ids) == 10 and ids == [e["id"] for e in sample_records(examples, 10, seed=42)]
    assert ids == sorted(ids, key=lambda i: int(i.split("-")[1]))  # in the split's order
    assert ids != [e["id"] for e in sample_records(examples, 10, seed=43)]  # the seed picks them
    assert sample_records(examples, None, seed=42) == examples
    assert sample_records(examples, 50, seed=42) == examples


class RecordEvaluationsAndSaves(TrainerCallback):
    """The steps the Trainer validated and checkpointed at, and the examples it validated on."""

    def __init__(self) -> None:
        self.evaluated, self.saved, self.validated_on = [], [], set()

    def on_evaluate(self, args, state, control, eval_dataloader=None, **kwargs):
        self.evaluated.append(state.global_step)
        self.validated_on.add(tuple(tuple(e["input_ids"]) for e in eval_dataloader.dataset))

    def on_save(self, args, state, control, **kwargs):
        self.saved.append(state.global_step)


def test_training_validates_and_checkpoints_at_fractions_of_an_epoch_on_a_sample(tiny_model_dir, tmp_path):
    """6 examples in batches of 2: 3 steps an epoch. Half an epoch: validation every 2 steps (1.5 rounded up),
    checkpoints every 3 (2 rounded up to a multiple of logging_steps). The last validation is the final one."""
    record = RecordEvaluationsAndSaves()
    train_tiny(
        tiny_model_dir,
        tmp_path,
        [10, 11, 12, 13, 14, 15],
        callbacks=[record],
        epochs=2,
        eval_steps=0.5,
        checkpoint_steps=0.5,
        logging_steps=3,
        eval_max_examples=1,
        bf16=False,
    )

    assert record.evaluated == [2, 4, 6, 6] and record.saved == [3, 6]
    sample = sample_records(VALIDATION, 1, seed=0)
    assert len(sample) == 1 and record.validated_on == {(tuple(sample[0]["input_ids"]),)}
