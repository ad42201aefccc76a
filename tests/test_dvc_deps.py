"""dvc.yaml lists, per stage, exactly the code its outputs depend on: the stage script and every src/medtune module
it imports, directly or through another module, lazy imports inside functions included (they run when the stage
does). A module missing from the deps lets an edit to it leave stale outputs; one too many reruns the stage for
nothing (a long training, or every merge).

The imports are read with `ast`, not by importing, so the test sees every branch of every function without running
any. An import under `if TYPE_CHECKING:` counts too: the guard errs towards listing a module.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

# Modules every stage imports whose code cannot change an output, so dvc.yaml leaves them out and an edit to them
# reruns nothing. A stage that fails writes no output, so raising and reporting do not shape one. Strict: nothing
# that computes, reads or writes a result belongs here.
ALLOWED = {
    "src/medtune/__init__.py": "it holds the version string and calls hub.start_offline()",
    "src/medtune/hub.py": "it decides whether base and prepare may reach the hub, not what they load: the model and "
    "dataset revisions in params do",
    "src/medtune/console.py": "it sets up logging and prints a MedtuneError as one line",
    "src/medtune/errors.py": "it defines the exception classes medtune raises",
    "src/medtune/checks.py": "it refuses bad config values when params.yaml is read; it changes no value (what a "
    "value means is in config.py, which every stage lists)",
}

# Data files a module reads from beside itself (`Path(__file__).with_name(...)`): a stage that imports the module
# depends on them as on its code. A new such file goes here, or the stage's listing of it is reported as extra.
DATA_FILES = {
    "src/medtune/faithfulness.py": ["src/medtune/medications.txt"],  # the lexicon of medicines, read by medications()
}

CODE = ("src/", "stages/")  # the deps this test checks; data, models and ${...} paths are the stages' inputs
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def imported_modules(path: Path) -> set[str]:
    """Every module the file imports, at any depth of its syntax tree, with the packages above each (importing
    `medtune.data` runs `medtune/__init__.py` first). `from package import name` yields `package.name` too: it is a
    module when `name` is one, and no file when it is not."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import, which this test does not follow"
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2)}


def module_file(name: str, root: Path) -> Path | None:
    """The file a dotted module name runs from the project at `root` (its src/ layout and its top level, as
    `python -m stages.<name>` finds them), or None for a library's module."""
    parts = name.split(".")
    for base in (root / "src", root):
        for candidate in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def import_closure(script: Path, root: Path) -> dict[Path, Path | None]:
    """`script` and every project file it imports, directly or not, each mapped to the file that first imports it
    (breadth first, so following the map back from a file gives a shortest import chain)."""
    importer: dict[Path, Path | None] = {script: None}
    todo = deque([script])
    while todo:
        path = todo.popleft()
        for name in sorted(imported_modules(path)):
            found = module_file(name, root)
            if found is not None and found not in importer:
                importer[found] = path
                todo.append(found)
    return importer


def import_chain(path: Path, importer: dict[Path, Path | None], root: Path) -> str:
    """How the stage comes to import `path`, e.g. `stages/merge.py -> src/medtune/card.py -> src/medtune/data.py`."""
    chain = []
    while path is not None:
        chain.append(path.relative_to(root).as_posix())
        path = importer[path]
    return " -> ".join(reversed(chain))


def listed_code(deps: list) -> set[str]:
    """The deps of one stage in dvc.yaml that are the project's code or its data files."""
    paths = (dep if isinstance(dep, str) else next(iter(dep)) for dep in deps)
    return {path for path in paths if path.startswith(CODE)}


def dep_problems(stage: str, script: Path, listed: set[str], root: Path) -> list[str]:
    """What to change in the stage's deps so they list exactly its script, the modules it imports (but ALLOWED)
    and those modules' DATA_FILES; one line per dep to add or remove, all of them at once."""
    importer = import_closure(script, root)
    reasons = {p.relative_to(root).as_posix(): "imported: " + import_chain(p, importer, root) for p in importer}
    reasons |= {data: f"read by {module}" for module in list(reasons) for data in DATA_FILES.get(module, [])}
    needed = reasons.keys() - ALLOWED.keys()
    add = [f"{stage}: add `- {path}` to its deps in dvc.yaml ({reasons[path]})" for path in sorted(needed - listed)]
    remove = [
        f"{stage}: remove `- {path}` from its deps in dvc.yaml ({_not_needed(path)})"
        for path in sorted(listed - needed)
    ]
    return add + remove


def _not_needed(path: str) -> str:
    """Why a listed dep is none: an ALLOWED module, or code the stage never runs."""
    return f"{ALLOWED[path]}: see ALLOWED in tests/test_dvc_deps.py" if path in ALLOWED else "the stage never runs it"


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_lists_exactly_the_code_it_runs(stage):
    definition = STAGES[stage].get("do", STAGES[stage])  # a foreach stage has its deps under `do:`
    module = re.search(r"python -m (stages\.\w+)", definition["cmd"]).group(1)
    script = ROOT / f"{module.replace('.', '/')}.py"
    problems = dep_problems(stage, script, listed_code(definition["deps"]), ROOT)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)  # every problem of the stage, one per line


def test_the_guard_reports_a_lazily_imported_module_missing_and_an_unused_one_listed(tmp_path):
    files = {
        "stages/demo.py": "from medtune import a, errors\n",
        "src/medtune/a.py": "def run():\n    from medtune.b import helper  # lazy: imported only when run() runs\n",
        "src/medtune/b.py": "import json\n\ndef helper():\n    return json.dumps({})\n",
        "src/medtune/c.py": "",
        "src/medtune/errors.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    script = tmp_path / "stages/demo.py"
    listed = {"stages/demo.py", "src/medtune/a.py", "src/medtune/c.py", "src/medtune/errors.py"}

    assert dep_problems("demo", script, listed, tmp_path) == [
        "demo: add `- src/medtune/b.py` to its deps in dvc.yaml "
        "(imported: stages/demo.py -> src/medtune/a.py -> src/medtune/b.py)",
        "demo: remove `- src/medtune/c.py` from its deps in dvc.yaml (the stage never runs it)",
        "demo: remove `- src/medtune/errors.py` from its deps in dvc.yaml "
        f"({ALLOWED['src/medtune/errors.py']}: see ALLOWED in tests/test_dvc_deps.py)",
    ]
    fixed = {"stages/demo.py", "src/medtune/a.py", "src/medtune/b.py"}
    assert dep_problems("demo", script, fixed, tmp_path) == []


# The package map of docs/design.md: the core the pipeline stages are built on, and the applications around it.
CORE = {"config", "checks", "data", "tasks", "modeling", "training", "generation", "metrics", "bootstrap"}
CORE |= {"faithfulness", "io", "checkpoints", "machine", "hub", "errors", "console"}


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_no_application_module(module):
    """The code reads as docs/design.md says: a core module uses only core modules, so an application (the report,
    the web app, the planner, ...) can change without touching what every stage runs."""
    imported = {name.removeprefix("medtune.") for name in imported_modules(ROOT / f"src/medtune/{module}.py")}
    applications = {path.stem for path in (ROOT / "src/medtune").glob("*.py")} - CORE - {"__init__"}
    assert not imported & applications, f"medtune.{module} imports {sorted(imported & applications)}"
