"""No network unless a config asks for the hub: medtune starts every process offline (medtune/hub.py), and only the
hub model and hub dataset loaders turn the hub on. Each check runs in a new Python process with internet sockets
refused and every attempt logged (tests/no_network/sitecustomize.py), and without HF_HUB_OFFLINE, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

STAGE_MODULES = sorted(f"stages.{path.stem}" for path in (ROOT / "stages").glob("*.py") if path.stem != "__init__")


def run_guarded(tmp_path: Path, code: str, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run `code` in a new process with the network guard; its result and the network attempts it made."""
    log = tmp_path / "network.log"
    clean = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    path = f"{ROOT / 'tests' / 'no_network'}{os.pathsep}{ROOT}"  # the guard, and the stage modules
    guarded = {**clean, "PYTHONPATH": path, "MEDTUNE_NETWORK_LOG": str(log)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env={**guarded, **env}
    )
    return result, log.read_text() if log.exists() else ""


def test_importing_every_stage_and_running_medtune_help_opens_no_socket(tmp_path):
    assert "stages.train" in STAGE_MODULES and "stages.base" in STAGE_MODULES
    imports = "; ".join(f"import {module}" for module in STAGE_MODULES)
    code = f"{imports}\nimport sys\nfrom medtune.cli import main\nsys.argv = ['medtune', '--help']\nmain()"
    result, attempts = run_guarded(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert "medtune params" in result.stdout  # --help really ran
    assert attempts == "", f"importing the stages or `medtune --help` reached for the network:\n{attempts}"


HUB_MODEL = (
    "from types import SimpleNamespace\n"
    "from medtune.modeling import resolve_weights_folder\n"
    "resolve_weights_folder(SimpleNamespace(path=None, hub_id='medtune-tests/no-such-model', revision='main'))"
)


def test_a_configured_hub_model_is_fetched_from_the_hub(tmp_path):
    """The hub loader stays real: with no HF_HUB_OFFLINE set by the user, it asks the hub (here: refused)."""
    result, attempts = run_guarded(tmp_path, HUB_MODEL, HF_HOME=str(tmp_path / "hf"))
    assert "ModelError" in result.stderr and "medtune-tests/no-such-model@main" in result.stderr
    assert "huggingface.co" in attempts


def test_a_users_hf_hub_offline_is_kept_for_the_hub_loaders_too(tmp_path):
    result, attempts = run_guarded(tmp_path, HUB_MODEL, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    assert "ModelError" in result.stderr and "OfflineModeIsEnabled" in result.stderr
    assert attempts == ""


def test_a_configured_hub_dataset_is_fetched_from_the_hub(tmp_path):
    code = (
        "from medtune.config import DataConfig, conf_section\nfrom medtune.data import read_hub_source\n"
        f"data = conf_section(DataConfig, {str(ROOT / 'conf/task/common.yaml')!r}, 'data', source='hub', "
        "hub_id='medtune-tests/no-such-dataset')\nread_hub_source(data, 'tasks.qa.data')"
    )
    result, attempts = run_guarded(tmp_path, code, HF_HOME=str(tmp_path / "hf"))
    assert "tasks.qa.data.hub_id" in result.stderr and "medtune-tests/no-such-dataset" in result.stderr
    assert "huggingface.co" in attempts


@pytest.mark.parametrize("user_setting", [None, "0", "1"])
def test_online_turns_the_hub_on_only_inside_and_only_when_the_user_did_not_choose(tmp_path, user_setting):
    code = (
        "import os\nfrom medtune import hub\nfrom huggingface_hub import constants\n"
        "before = constants.HF_HUB_OFFLINE\n"
        "with hub.online():\n    inside = constants.HF_HUB_OFFLINE\n"
        "print(before, inside, constants.HF_HUB_OFFLINE, os.environ['HF_HUB_OFFLINE'])"
    )
    env = {} if user_setting is None else {"HF_HUB_OFFLINE": user_setting}
    result, _ = run_guarded(tmp_path, code, **env)
    expected = {None: "True False True 1", "0": "False False False 0", "1": "True True True 1"}[user_setting]
    assert result.stdout.split() == expected.split(), result.stderr
