"""The environment is an input: requirements/lock.txt pins every package (made from pyproject.toml's ranges by
requirements/lock.sh), the README commands and CI install it, and these tests keep the two files in agreement."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

LOCKED_EXTRAS = {"dev"}  # and what it names: qlora, ui. `export` compiles llama.cpp (~12 min), so it is not locked
PYPROJECT = "medtune (pyproject.toml)"


def read_lock(text: str) -> dict[str, tuple[str, set[str]]]:
    """`name -> (version, what needs it)` from a `uv pip compile` file (its `# via` annotations)."""
    packages: dict[str, tuple[str, set[str]]] = {}
    name = None
    for line in text.splitlines():
        if pin := re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line):
            name = canonicalize_name(pin[1])
            packages[name] = (pin[2], set())
        elif name and (via := re.fullmatch(r"\s+#\s+(?:via\s+)?(\S.*)", line)) and via[1] != "via":
            packages[name][1].add(via[1].strip())
    return packages


def project_requirements(pyproject: dict, extras: set[str]) -> list[Requirement]:
    """medtune's requirements with `extras` and the extras they name (`medtune[qlora,ui]`), self-references left out."""
    optional = pyproject["project"]["optional-dependencies"]
    wanted, requirements, seen = list(extras), list(map(Requirement, pyproject["project"]["dependencies"])), set()
    while wanted:
        extra = wanted.pop()
        seen.add(extra)
        for requirement in map(Requirement, optional[extra]):
            if requirement.name == "medtune":
                wanted += sorted(requirement.extras - seen)
            else:
                requirements.append(requirement)
    return requirements


def disagreements(lock: dict[str, tuple[str, set[str]]], requirements: list[Requirement]) -> list[str]:
    """What differs between the lock and pyproject.toml's requirements; empty when they agree."""
    problems, named = [], {canonicalize_name(r.name) for r in requirements}
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name not in lock:
            problems.append(f"{requirement} is in pyproject.toml but not in the lock")
        elif not requirement.specifier.contains(Version(lock[name][0]), prereleases=True):
            problems.append(f"the lock has {name}=={lock[name][0]}, outside pyproject.toml's {requirement}")
    for name, (_, needed_by) in sorted(lock.items()):
        if PYPROJECT in needed_by and name not in named:
            problems.append(f"the lock has {name} as a dependency of medtune, but pyproject.toml does not name it")
        if not needed_by:
            problems.append(f"the lock has {name}, and nothing needs it")
    return problems


LOCK = read_lock((ROOT / "requirements" / "lock.txt").read_text())
PROJECT = project_requirements(tomllib.loads((ROOT / "pyproject.toml").read_text()), LOCKED_EXTRAS)


def test_the_lock_and_pyproject_agree():
    assert LOCK["torch"][0] == "2.13.0+cpu" and {"bitsandbytes", "gradio", "pytest", "uv"} <= set(LOCK)
    assert disagreements(LOCK, PROJECT) == [], "refresh the lock: requirements/lock.sh (see docs/environment.md)"


def test_a_dependency_added_to_or_dropped_from_one_side_is_a_disagreement():
    added = [*PROJECT, Requirement("medtune-no-such-package>=1")]
    assert disagreements(LOCK, added) == ["medtune-no-such-package>=1 is in pyproject.toml but not in the lock"]
    dropped = [r for r in PROJECT if r.name != "rich"]
    assert disagreements(LOCK, dropped) == [
        "the lock has rich as a dependency of medtune, but pyproject.toml does not name it"
    ]
    narrowed = [Requirement("peft<0.1") if r.name == "peft" else r for r in PROJECT]
    assert disagreements(LOCK, narrowed) == [f"the lock has peft=={LOCK['peft'][0]}, outside pyproject.toml's peft<0.1"]
    orphan = {**LOCK, "left-over": ("1.0", set())}
    assert disagreements(orphan, PROJECT) == ["the lock has left-over, and nothing needs it"]


def test_the_embedded_model_package_is_pinned():
    text = (ROOT / "requirements" / "embedded-model.txt").read_text()
    lines = [line for line in text.splitlines() if line[:1].isalpha()]
    assert lines and all(re.fullmatch(r"[\w.-]+==\S+", line) for line in lines), lines


def installed_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def test_the_installed_environment_is_the_lock():
    """What CI and the README commands install. torch is left out: the GPU install keeps the user's CUDA build."""
    wrong = [
        f"{name} {installed_version(name)} (lock: {version})"
        for name, (version, _) in LOCK.items()
        if name != "torch" and installed_version(name) != version
    ]
    assert not wrong, f"installed versions differ from the lock: {wrong}; pip install -r requirements/lock.txt"
