"""params.yaml is the Hydra composition of conf/, and bad keys fail with a helpful message."""

from __future__ import annotations

from dataclasses import MISSING as MISSING_FACTORY
from dataclasses import fields, is_dataclass

import pytest
import yaml
from omegaconf import MISSING, OmegaConf

from conftest import ROOT
from medtune import config
from medtune.config import compose_params, load_params, max_length, task_config, train_config, validate
from medtune.errors import ConfigError


def test_committed_params_yaml_is_the_composition_of_conf(tmp_path):
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    composed = yaml.safe_load(compose_params(tmp_path).read_text())
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == composed, "params.yaml is stale: run `medtune params` and commit it"


def test_group_switch_and_override_compose(tmp_path):
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    params = load_params(compose_params(tmp_path, ["model=tiny-random", "peft.r=16", "task@tasks.qa=qa_medquad"]))
    assert params.model.weights.source == "tiny-random"
    assert params.peft.r == 16
    assert params.tasks.qa.data.hub_id == "keivalya/MedQuad-MedicalQnADataset"
    assert params.tasks.qa.system.startswith("You are a medical information assistant")  # inherited from qa.yaml


def test_override_of_an_unknown_key_is_refused(tmp_path):
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    with pytest.raises(ConfigError, match=r"peft\.rank"):
        compose_params(tmp_path, ["peft.rank=16"])


def test_a_composition_that_fails_validation_leaves_params_yaml_as_it_was(tmp_path):
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    before = compose_params(tmp_path).read_text()
    with pytest.raises(ConfigError, match=r"tasks\.qa\.split\.test.*above 0 and below 1.*not 0"):
        compose_params(tmp_path, ["tasks.qa.split.test=0"])
    assert (tmp_path / "params.yaml").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "params.yaml"]  # no temporary file left


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_misspelled_key_names_the_key_and_suggests_the_right_one():
    raw = _params()
    raw["tasks"]["qa"]["data"]["colums"] = raw["tasks"]["qa"]["data"].pop("columns")
    with pytest.raises(ConfigError, match=r"tasks\.qa\.data\.colums.*did you mean `columns`"):
        validate(raw)


def test_wrong_type_and_missing_key_are_reported():
    raw = _params()
    raw["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"train\.lr"):
        validate(raw)
    raw = _params()
    del raw["model"]["name"]
    with pytest.raises(ConfigError, match=r"model\.name.*missing"):
        validate(raw)


def test_unknown_task_lists_the_configured_ones():
    params = OmegaConf.create(validate(_params()))
    assert task_config(params, "qa").kind == "sft"
    with pytest.raises(ConfigError, match=r"tasks\.dermatology.*configured: qa, simplification, terminology, ner"):
        task_config(params, "dermatology")


def test_a_task_can_override_the_global_training_config():
    raw = _params()
    raw["tasks"]["ner"]["train"] = {"epochs": 8, "lr": 1e-3}
    params = validate(raw)
    assert (train_config(params, "ner").epochs, train_config(params, "ner").lr) == (8, 1e-3)
    assert train_config(params, "qa").epochs == params.train.epochs
    raw["tasks"]["ner"]["train"] = {"epoch": 8}
    with pytest.raises(ConfigError, match=r"tasks\.ner\.train\.epoch.*did you mean `epochs`"):
        train_config(validate(raw), "ner")


def test_train_max_length_sets_every_tasks_length_and_null_keeps_their_own():
    raw = _params()
    assert max_length(validate(raw), "qa") == raw["tasks"]["qa"]["max_length"]
    raw["train"]["max_length"] = 512
    assert {max_length(validate(raw), task) for task in raw["tasks"]} == {512}


def test_an_unknown_launcher_is_refused():
    raw = _params()
    raw["train"]["launcher"] = "torchrun"
    with pytest.raises(ConfigError, match=r"train\.launcher.*must be 'python' or 'accelerate', not 'torchrun'"):
        validate(raw)


def test_an_unknown_attention_implementation_is_refused_by_name():
    raw = _params()
    raw["train"]["attn_implementation"] = "flash"
    with pytest.raises(
        ConfigError, match=r"train\.attn_implementation.*must be 'eager' or 'sdpa' or 'flash_attention_2', not 'flash'"
    ):
        validate(raw)


def test_a_tasks_own_train_max_length_is_refused_with_the_key_that_sets_it():
    raw = _params()
    raw["tasks"]["qa"]["train"] = {"max_length": 512}
    with pytest.raises(ConfigError, match=r"tasks\.qa\.train\.max_length.*set .* with tasks\.qa\.max_length"):
        validate(raw)


def test_a_task_cannot_point_at_its_own_accelerate_config_file():
    """dvc.yaml tracks the file of train.accelerate_config: a task's own file would change without rerunning it."""
    raw = _params()
    raw["tasks"]["qa"]["train"] = {"launcher": "accelerate"}
    assert train_config(validate(raw), "qa").launcher == "accelerate"
    raw["tasks"]["qa"]["train"]["accelerate_config"] = "conf/accelerate/mine.yaml"
    with pytest.raises(ConfigError, match=r"tasks\.qa\.train\.accelerate_config.*set train\.accelerate_config"):
        validate(raw)


def test_training_intervals_are_step_counts_or_fractions_of_an_epoch():
    """A fraction of an epoch needs no multiple of logging_steps (training rounds it up to one); 0 checkpoints none."""
    raw = _params()
    raw["train"].update(eval_steps=0.25, checkpoint_steps=0.3, logging_steps=5, eval_max_examples=None)
    raw["tasks"]["ner"]["train"] = {"eval_steps": 40, "checkpoint_steps": 0, "eval_max_examples": 8}
    params = validate(raw)
    assert (params.train.eval_steps, params.train.checkpoint_steps, params.train.eval_max_examples) == (0.25, 0.3, None)
    ner = train_config(params, "ner")
    assert (ner.eval_steps, ner.checkpoint_steps, ner.eval_max_examples) == (40, 0, 8)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ["model", "weights", "dtype"],
            "fp32",
            r"model\.weights\.dtype.*must be 'float32' or 'bfloat16' or 'float16', not 'fp32'",
        ),
        (["tasks", "ner", "kind"], "ner", r"tasks\.ner\.kind.*must be 'sft' or 'token_classification', not 'ner'"),
        (["tasks", "qa", "metrics"], ["rouge_l", "rouge"], r"tasks\.qa\.metrics.*unknown metric 'rouge'.*rouge_l"),
        (["eval", "max_examples"], -1, r"eval\.max_examples.*must be 1 or more.*not -1"),
        (["judge", "max_examples"], 0, r"judge\.max_examples.*not 0"),
        (["tasks", "qa", "data", "max_records"], -5, r"tasks\.qa\.data\.max_records.*not -5"),
        (["tasks", "qa", "data", "source"], "s3", r"tasks\.qa\.data\.source.*must be 'local' or 'hub', not 's3'"),
        (["tasks", "qa", "data", "path"], "", r"tasks\.qa\.data\.path.*is empty"),
        (["tasks", "qa", "data", "source"], "hub", r"tasks\.qa\.data\.hub_id.*is empty"),  # qa sets no hub_id
        (["tasks", "qa", "data", "on_invalid"], "skip", r"tasks\.qa\.data\.on_invalid.*'error' or 'drop'"),
        (["tasks", "qa", "data", "columns"], {"prompt": "q"}, r"tasks\.qa\.data\.columns.*must map response"),
        (["tasks", "qa", "split", "validation"], 0.0, r"tasks\.qa\.split\.validation.*above 0 and below 1.*not 0"),
        (["tasks", "qa", "split", "test"], 1.0, r"tasks\.qa\.split\.test.*not 1"),
        (["tasks", "qa", "split", "test"], 0.9, r"tasks\.qa\.split.*leave no train split"),
        (["tasks", "qa", "prompt_template"], "Explain:", r"tasks\.qa\.prompt_template.*must contain \{prompt\}"),
        (["tasks", "ner", "data", "columns"], {"text": "t"}, r"tasks\.ner\.data\.columns.*`tokens` and `tags`"),
        (["tasks", "ner", "orphan_inside"], "fix", r"tasks\.ner\.orphan_inside.*'error' or 'repair', not 'fix'"),
        (["tasks", "ner", "labels"], ["B-Disease", "O"], r"tasks\.ner\.labels.*must list O first"),
        (["tasks", "ner", "labels"], ["O", "Disease"], r"tasks\.ner\.labels.*'Disease' is not an IOB2 label"),
        (["tasks", "ner", "labels"], ["O", "B-Drug", "B-Drug"], r"tasks\.ner\.labels.*'B-Drug' is listed twice"),
        (["train", "eval_steps"], 0, r"train\.eval_steps.*fraction of an epoch \(above 0, below 1\), not 0$"),
        (["train", "eval_steps"], -0.5, r"train\.eval_steps.*not -0\.5"),
        (["train", "eval_steps"], 2.5, r"train\.eval_steps.*whole number of steps.*not 2\.5"),
        (["train", "checkpoint_steps"], -0.25, r"train\.checkpoint_steps.*or 0 for none, not -0\.25"),
        (["train", "checkpoint_steps"], 12.5, r"train\.checkpoint_steps.*whole number of steps.*not 12\.5"),
        (["train", "checkpoint_steps"], 12, r"train\.checkpoint_steps.*multiple of logging_steps \(5\), not 12:"),
        (["train", "eval_max_examples"], -1, r"train\.eval_max_examples.*must be 1 or more.*not -1"),
        (["train", "eval_max_examples"], 0, r"train\.eval_max_examples.*not 0"),
        (["train", "logging_steps"], 0, r"train\.logging_steps.*must be 1 or more, not 0"),
        (["tasks", "ner", "train"], {"eval_steps": 2.5}, r"tasks\.ner\.train\.eval_steps.*not 2\.5"),
        (["tasks", "ner", "train"], {"checkpoint_steps": -3}, r"tasks\.ner\.train\.checkpoint_steps.*not -3"),
        (["tasks", "ner", "train"], {"eval_max_examples": -2}, r"tasks\.ner\.train\.eval_max_examples.*not -2"),
        (["tasks", "ner", "attention"], "both", r"tasks\.ner\.attention.*'causal' or 'bidirectional', not 'both'"),
        (["tasks", "qa", "attention"], "bidirectional", r"tasks\.qa\.attention.*only token_classification"),
        # one bad value in each other section of params.yaml
        (["model", "weights", "source"], "s3", r"model\.weights\.source.*'gguf-package' or 'hub' or 'tiny-random'"),
        (["model", "weights", "package"], None, r"model\.weights\.package.*needed for source gguf-package"),
        (["model", "lora_targets"], [], r"model\.lora_targets.*names no module"),
        (["peft", "method"], "ia3", r"peft\.method.*must be 'lora' or 'qlora' or 'full', not 'ia3'"),
        (["peft", "method"], "full", r"peft\.r.*a LoRA setting.*peft=full trains every weight.*leave it null"),
        (["peft", "r"], 0, r"peft\.r.*must be 1 or more, not 0"),
        (["peft", "r"], None, r"peft\.r.*lora needs it"),
        (["peft", "dropout"], 1.0, r"peft\.dropout.*below 1, not 1"),
        (
            ["peft", "quantization"],
            {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"},
            r"peft\.quantization.*only used with peft\.method=qlora",
        ),
        (["train", "batch_size"], 0, r"train\.batch_size.*must be 1 or more, not 0"),
        (["train", "lr"], -1e-4, r"train\.lr.*must be above 0"),
        (["train", "max_steps"], 0, r"train\.max_steps.*-1 \(train all epochs\) or 1 or more, not 0"),
        (["eval", "bootstrap_samples"], -1, r"eval\.bootstrap_samples.*0 \(no intervals\) or more, not -1"),
        (["eval", "confidence"], 95, r"eval\.confidence.*above 0 and below 1 \(0\.95: 95%\), not 95"),
        (["eval", "near_copy_distance"], 1.5, r"eval\.near_copy_distance.*below 1, not 1\.5"),
        (["judge", "enabled"], True, r"judge\.url.*set judge\.url and judge\.model"),
        (["scope", "threshold"], 1.5, r"scope\.threshold.*between 0 and 1, not 1\.5"),
        (["scope", "c"], 0, r"scope\.c.*must be above 0"),
        (["export", "tasks"], ["ner"], r"export\.tasks.*'ner' is not a generative task of this run"),
        (["export", "types"], ["f16", "q3"], r"export\.types.*not 'q3'"),
        (["export", "ollama"], "f32", r"export\.ollama.*'f32' is not in export\.types"),
        (["eval", "general", "max_examples"], -1, r"eval\.general\.max_examples.*0 \(no forgetting check\).*not -1"),
        (["harness", "benchmarks"], "surgery", r"harness\.benchmarks.*'surgery' is not a list of harness\.lists"),
        (
            ["harness", "benchmarks"],
            [],
            r"harness\.benchmarks.*name a list of harness\.lists or list lm-eval task names",
        ),
        (["harness", "num_fewshot"], -1, r"harness\.num_fewshot.*must be 0 or more, not -1"),
        (["align", "tasks"], ["ner"], r"align\.tasks.*'ner' is not a generative task of this run"),
        (["align", "pairs", "top_p"], 0, r"align\.pairs\.top_p.*above 0 and at most 1, not 0"),
        (["align", "pairs", "margin"], -0.1, r"align\.pairs\.margin.*0 or more, not -0\.1"),
        (["privacy", "phi"], "ignore", r"privacy\.phi.*must be 'error' or 'warn' or 'redact', not 'ignore'"),
        (["seed"], "random", r"seed"),
    ],
)
def test_bad_values_are_refused_when_params_are_read_before_any_stage_runs(path, value, message):
    raw = _params()
    section = raw
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        validate(raw)


def test_the_schema_holds_no_defaults_of_its_own():
    """conf/ is the one home of every default: a schema field is MISSING (conf/ must give it), None (unset has a
    meaning, which its comment says) or a section; a second default here would disagree with conf/ sooner or later."""
    for schema in config_dataclasses():
        for f in fields(schema):
            if f.default_factory is not MISSING_FACTORY:
                assert f.default_factory in (dict, *config_dataclasses()), f"{schema.__name__}.{f.name}"
            else:
                assert f.default in (MISSING, None), f"{schema.__name__}.{f.name} = {f.default!r}: move it to conf/"


def config_dataclasses() -> list[type]:
    return [obj for obj in vars(config).values() if is_dataclass(obj)]


def test_bidirectional_attention_is_refused_with_padding_free_batches():
    """A padding-free row packs several sentences: attending both ways, they would see each other."""
    raw = _params()
    raw["tasks"]["ner"]["attention"] = "bidirectional"
    assert validate(raw).tasks.ner.attention == "bidirectional"
    raw["tasks"]["ner"]["train"] = {"padding_free": True}
    with pytest.raises(ConfigError, match=r"tasks\.ner\.attention.*needs padded batches"):
        validate(raw)
