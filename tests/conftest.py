"""Shared fixtures: the project root and a tiny random Llama built from config (no files, no hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medtune.config import WeightsConfig
from medtune.modeling import build_base_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/base/tiny-random as the base stage writes it."""
    out = tmp_path_factory.mktemp("tiny-random")
    build_base_model(OmegaConf.structured(WeightsConfig(source="tiny-random")), out)
    return out


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
