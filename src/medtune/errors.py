"""medtune's own errors: each names where the problem is (file and line, or config key) and how to fix it.

Stages let these propagate; the CLI and `stages/*` entry points print them without a traceback.
"""

from __future__ import annotations


class MedtuneError(Exception):
    """Base class: a problem the user can fix (data, config, missing model), not a bug in medtune."""


class DataError(MedtuneError):
    """A record in an input dataset is malformed. `where` is `path:line` or `path (record N)`."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class ConfigError(MedtuneError):
    """A config key is unknown, missing or has a wrong value. `key` is the dotted path, e.g. `tasks.qa.data`."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config key `{key}`: {problem}")


class ModelError(MedtuneError):
    """A model or its tokenizer cannot be found, loaded or converted (offline hub, missing package, bad local path,
    no chat template, a GGUF conversion that fails)."""


class TrainingError(MedtuneError):
    """Training went wrong in a way the config can fix: a loss or weight that is no longer finite."""


class ResourceError(MedtuneError):
    """The machine lacks what a stage needs (free disk), found before the stage starts writing."""
