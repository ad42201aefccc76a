"""Preference tuning: the user's own pairs read and checked, TRL's DPOTrainer on a LoRA adapter over the SFT model
(the tiny Llama stands in for it), a run killed with SIGKILL resuming to the same adapter, the aligned model merged,
and the settings refused before anything runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_faults import finished, kill_after_checkpoint

from conftest import STAGE_ENV, a_peft, a_train, link_project, tokenized_qa
from medtune.alignment import conversation, train_dpo
from medtune.config import compose_params
from medtune.data import read_given_pairs
from medtune.errors import ConfigError, DataError, TrainingError
from medtune.io import read_json, write_json, write_jsonl
from medtune.modeling import MAX_RELATIVE_LOGIT_DIFF, load_tokenizer

DOSES = [(n, h) for n in (5, 10, 20, 25, 40, 50, 75, 100) for h in (4, 6, 8, 12)]


def dose_pairs(count: int) -> list[dict]:
    """Pairs whose chosen answer keeps the dose and whose rejected answer changes it, as the pairs stage would rank
    them."""
    return [
        {"id": f"p{i}", "prompt": f"Take {n} mg every {h} hours with food.", "chosen": f"Take {n} mg every {h} hours.",
         "rejected": f"Take {n + 1} tablets every {h * 2} hours."}
        for i, (n, h) in enumerate(DOSES[:count])
    ]  # fmt: skip


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --- given pairs -------------------------------------------------------------------------------------------------


def test_given_pairs_keep_their_validation_file(tmp_path):
    write_rows(tmp_path / "train.jsonl", dose_pairs(8))
    write_rows(tmp_path / "validation.jsonl", dose_pairs(10)[8:])
    splits, stats = read_given_pairs(tmp_path, 0.1, seed=1)
    assert [len(splits["train"]), len(splits["validation"])] == [8, 2]
    assert splits["train"][0] == {
        "id": "p0", "prompt": "Take 5 mg every 4 hours with food.", "chosen": "Take 5 mg every 4 hours.",
        "rejected": "Take 6 tablets every 8 hours.",
    }  # fmt: skip
    assert stats["validation"] == {"file": str(tmp_path / "validation.jsonl"), "pairs": 2}


def test_without_a_validation_file_a_share_of_train_is_carved_and_no_prompt_is_in_both(tmp_path):
    rows = dose_pairs(20)
    rows.append({**rows[0], "id": "again", "chosen": "Take 5 mg every 4 hours, with a meal."})  # the same prompt
    write_rows(tmp_path / "train.jsonl", rows)
    splits, stats = read_given_pairs(tmp_path, 0.2, seed=1)
    assert len(splits["validation"]) in (4, 5) and len(splits["train"]) + len(splits["validation"]) == 21
    prompts = [{p["prompt"] for p in splits[s]} for s in ("train", "validation")]
    assert not prompts[0] & prompts[1]
    assert stats["validation"]["file"] == "carved from train (0.2)"
    assert read_given_pairs(tmp_path, 0.2, seed=1)[0] == splits  # by seed: the same split every time


def test_a_bad_given_pair_is_refused_with_its_file_and_line(tmp_path):
    rows = dose_pairs(3)
    rows[1]["rejected"] = rows[1]["chosen"]
    write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train\.jsonl:2.*chosen and rejected are the same text"):
        read_given_pairs(tmp_path, 0.5, seed=1)
    rows[1] = {"prompt": "Take 5 mg.", "chosen": "Take 5 mg."}
    write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r'train\.jsonl:2.*column "rejected"'):
        read_given_pairs(tmp_path, 0.5, seed=1)


def test_given_pairs_need_one_train_file(tmp_path):
    with pytest.raises(DataError, match="no train file of preference pairs"):
        read_given_pairs(tmp_path, 0.1, seed=1)
    write_rows(tmp_path / "train.jsonl", dose_pairs(4))
    (tmp_path / "train.csv").write_text("prompt,chosen,rejected\na,b,c\n")
    with pytest.raises(DataError, match=r"two train files \(train\.jsonl, train\.csv\)"):
        read_given_pairs(tmp_path, 0.1, seed=1)


def test_a_pair_is_the_tasks_chat_turns_then_each_answer_as_the_assistant():
    pair = {"prompt": "Take 5 mg.", "chosen": "Five milligrams.", "rejected": "Five tablets."}
    assert conversation(pair, "Be kind.", "Rewrite: {prompt}") == {
        "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Rewrite: Take 5 mg."}],
        "chosen": [{"role": "assistant", "content": "Five milligrams."}],
        "rejected": [{"role": "assistant", "content": "Five tablets."}],
    }
    own = conversation({**pair, "system": "Be brief."}, "Be kind.", "{prompt}")
    assert own["prompt"][0] == {"role": "system", "content": "Be brief."}  # a pair's own system prompt wins


# --- DPO training ------------------------------------------------------------------------------------------------


def dpo(tiny_model_dir: Path, out: Path, pairs: list[dict], **train: object) -> tuple[dict, dict]:
    settings = {"max_steps": 6, "batch_size": 4, "lr": 1e-2, "logging_steps": 1, "eval_steps": 3, **train}
    return train_dpo(
        sft_dir=tiny_model_dir,
        tokenizer=load_tokenizer(tiny_model_dir),
        train_pairs=pairs[:-4],
        eval_pairs=pairs[-4:],
        system="Answer in plain words.",
        template="{prompt}",
        peft=a_peft(),
        train=a_train(**settings),
        lora_targets=["q_proj", "v_proj"],
        beta=0.1,
        losses=["sigmoid"],
        max_length=96,
        seed=3,
        adapter_dir=out / "adapter",
        live_dir=out / "live",
        checkpoint_dir=out / "checkpoints",
    )


def test_dpo_learns_to_prefer_the_chosen_answers_and_reproduces_byte_for_byte(tiny_model_dir, tmp_path):
    results, resources = dpo(tiny_model_dir, tmp_path / "a", dose_pairs(20))
    assert results["steps"] == 6 and results["pairs"] == 16 and results["validation_pairs"] == 4
    assert results["eval_loss"] < 0.6931  # below log 2, where an untrained adapter starts (margin 0)
    assert results["eval_rewards/margins"] > 0 and results["eval_rewards/accuracies"] > 0.5
    curves = tmp_path / "a" / "live" / "plots" / "metrics"
    margins = [float(line.split("\t")[1]) for line in (curves / "rewards" / "margins.tsv").read_text().splitlines()[1:]]
    assert margins[0] == 0 and margins[-1] > 0  # the first step is the reference itself: no margin yet
    assert (curves / "eval" / "rewards" / "accuracies.tsv").is_file()
    assert resources["train_tokens_per_s"] > 0
    dpo(tiny_model_dir, tmp_path / "b", dose_pairs(20))
    adapter = "adapter/adapter_model.safetensors"
    assert (tmp_path / "a" / adapter).read_bytes() == (tmp_path / "b" / adapter).read_bytes()


def test_a_diverging_preference_run_stops_at_once_naming_the_setting_to_lower(tiny_model_dir, tmp_path):
    with pytest.raises(TrainingError, match=r"step [12]: .*lower align\.train\.lr"):
        dpo(tiny_model_dir, tmp_path, dose_pairs(12), lr=1e38)
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()


# --- the align stage ---------------------------------------------------------------------------------------------

# 28 pairs, batch 4, 2 epochs: 14 steps; a checkpoint every 2 steps
RESUMABLE = ["model=tiny-random", "align.tasks=[qa]", "align.train.epochs=2", "align.train.lr=1e-2",
             "train.batch_size=4", "train.logging_steps=2", "train.eval_steps=4",
             "train.checkpoint_steps=2"]  # fmt: skip


@pytest.fixture
def align_project(tmp_path: Path) -> Path:
    """A project with the qa task's preference pairs, tokenized test inputs and SFT metrics, as the stages before
    align leave them."""
    link_project(tmp_path, "conf", "stages")
    compose_params(tmp_path, RESUMABLE)
    write_jsonl(tmp_path / "data/pairs/qa/train.jsonl", dose_pairs(28))
    write_jsonl(tmp_path / "data/pairs/qa/validation.jsonl", dose_pairs(32)[28:])
    tokenized_qa(tmp_path / "data/tokenized/qa")
    write_json(tmp_path / "metrics/qa/train.json", {"eval_loss": 2.5, "steps": 10})
    return tmp_path


def start_align(project: Path, sft_dir: Path, run: str) -> subprocess.Popen:
    """The align stage writing to `run`/{adapter,aligned,metrics,checkpoints}, in the background."""
    (project / run / "metrics").mkdir(parents=True, exist_ok=True)
    (project / run / "metrics" / "train.json").write_bytes((project / "metrics/qa/train.json").read_bytes())
    outputs = [str(project / run / name) for name in ("adapter", "aligned", "metrics", "checkpoints")]
    command = [sys.executable, "-m", "stages.align", "qa", "data/pairs/qa", "data/tokenized/qa", str(sft_dir)]
    return subprocess.Popen(
        [*command, *outputs], cwd=project, env=STAGE_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_the_align_stage_killed_mid_training_resumes_to_the_same_adapter_and_merges_it(align_project, tiny_model_dir):
    finished(start_align(align_project, tiny_model_dir, "once"))
    killed = start_align(align_project, tiny_model_dir, "twice")
    kill_after_checkpoint(killed, align_project / "twice" / "checkpoints", step=8)  # 1 step into the second epoch
    assert killed.returncode == -signal.SIGKILL
    assert not (align_project / "twice" / "adapter").exists() and not (align_project / "twice" / "aligned").exists()
    log = finished(start_align(align_project, tiny_model_dir, "twice"))

    once, twice = (align_project / run for run in ("once", "twice"))
    resumed_from = read_json(twice / "metrics" / "align_resources.json")["resumed_from_step"]
    assert resumed_from >= 8 and f"checkpoint-{resumed_from}" in log
    assert (twice / "metrics" / "align.json").read_text() == (once / "metrics" / "align.json").read_text()
    first, second = (load_file(run / "adapter" / "adapter_model.safetensors") for run in (once, twice))
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, atol=1e-6, rtol=0)
    aligned = read_json(once / "metrics" / "align.json")
    assert aligned["steps"] == 14 and aligned["merge"]["relative_logit_diff"] <= MAX_RELATIVE_LOGIT_DIFF["merge"]
    assert (once / "aligned" / "model.safetensors").is_file() and (once / "aligned" / "tokenizer.json").is_file()
    assert "28 preference pairs (sampled from the SFT model" in (once / "aligned" / "README.md").read_text()
    assert [p.name for p in (twice / "checkpoints").iterdir()] == ["state.json"]  # cleared when done


# --- settings ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, error",
    [
        (["align.tasks=[qa]", "align.loss_type=[dpo]"], r"align\.loss_type.*sigmoid.*not 'dpo'"),
        (["align.tasks=[qa]", "align.beta=0"], r"align\.beta.*above 0"),
        (
            ["align.tasks=[qa]", "align.given=[simplification]"],
            r"align\.given.*'simplification' is not in align\.tasks",
        ),
        (["align.tasks=[ner]"], r"align\.tasks.*'ner' is not a generative task"),
        (["align.tasks=[qa]", "peft=full"], r"align\.tasks.*peft\.method=full there is no adapter"),
        (["align.tasks=[qa]", "align.train.lr=-1"], r"align\.train\.lr"),
        (["align.tasks=[qa]", "+align.train.epoch=2"], r"align\.train\.epoch\b.*did you mean `epochs`"),
        (["+align.train.epoch=2"], r"align\.train\.epoch\b.*did you mean `epochs`"),  # before any task aligns
        (["+align.train.max_length=64"], r"align\.train\.max_length.*not read.*set align\.max_length"),
        (["+align.train.padding_free=true"], r"align\.train\.padding_free.*not read.*TRL pads"),
    ],
)
def test_preference_settings_are_refused_before_anything_runs(conf_project, overrides, error):
    with pytest.raises(ConfigError, match=error):
        compose_params(conf_project, overrides)
