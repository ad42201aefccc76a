"""The `medtune` command: each command runs its own handler with the arguments given."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medtune import cli
from medtune.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "handler", "given"),
    [
        (["params", "model=tiny-random"], "_params", {"overrides": ["model=tiny-random"], "root": "."}),
        (
            ["plan", "peft=qlora", "--root", "/p"],
            "_plan",
            {"overrides": ["peft=qlora"], "root": "/p", "stage": "train"},
        ),
        (["plan", "--stage", "align"], "_plan", {"stage": "align"}),
        (["predict", "ner", "a text"], "_predict", {"task": "ner", "text": "a text", "batch_size": 16}),
        (["chat", "qa"], "_chat", {"task": "qa", "adapter": None, "aligned": False}),
        (["chat", "qa", "--aligned"], "_chat", {"task": "qa", "aligned": True}),
        (["predict", "qa", "a text", "--aligned"], "_predict", {"task": "qa", "aligned": True}),
        (["serve", "qa", "--port", "8000"], "_serve", {"task": "qa", "port": 8000}),
        (["report", "--against", "main"], "_report", {"against": "main", "rev": None}),
        (["exp", "table", "--metric", "ner.f1"], "_exp_table", {"action": "table", "metric": "ner.f1"}),
    ],
)
def test_each_command_runs_its_handler(argv, handler, given, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, handler, calls.append)
    monkeypatch.setattr(sys, "argv", ["medtune", *argv])
    cli.main()

    assert len(calls) == 1 and calls[0].command == argv[0]
    assert {key: getattr(calls[0], key) for key in given} == given


def test_no_command_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["medtune"])
    with pytest.raises(SystemExit) as usage:
        cli.main()
    assert usage.value.code == 2 and "the following arguments are required: command" in capsys.readouterr().err


def command_args(argv: list[str]) -> object:
    return cli._parser().parse_args(argv)


def test_aligned_runs_the_tasks_preference_tuned_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.model_dir(command_args(["chat", "qa"])) == Path("models/merged/qa")
    with pytest.raises(ConfigError, match=r"models/aligned/qa does not exist.*dvc repro align@qa"):
        cli.model_dir(command_args(["serve", "qa", "--aligned"]))
    (tmp_path / "models/aligned/qa").mkdir(parents=True)
    assert cli.model_dir(command_args(["predict", "qa", "some text", "--aligned"])) == Path("models/aligned/qa")
    with pytest.raises(ConfigError, match=r"--aligned.*leave out --model and --adapter"):
        cli.model_dir(command_args(["chat", "qa", "--aligned", "--adapter", "adapters/qa"]))
