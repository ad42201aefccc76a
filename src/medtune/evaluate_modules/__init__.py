"""medtune's own metrics as local Hugging Face `evaluate` modules, loadable offline:

    import evaluate
    from medtune.evaluate_modules import module_path
    sari = evaluate.load(module_path("sari"))
    sari.compute(sources=[...], predictions=[...], references=[[...], ...])

They wrap `medtune.metrics` (one implementation); `evaluate` itself is optional (pip install evaluate).
"""

from __future__ import annotations

from pathlib import Path


def module_path(name: str) -> str:
    """The folder `evaluate.load` takes for one of medtune's metric modules: "sari" or "terminology_format"."""
    path = Path(__file__).parent / name
    if not (path / f"{name}.py").is_file():
        raise ValueError(f"no medtune evaluate module {name!r}; available: sari, terminology_format")
    return str(path)
