"""How medtune prints numbers and metric tables, in model cards and in the review report alike.

A module of its own, importing nothing of medtune, so that the model card (written by the merge and export stages)
does not depend on the report's code: a change to the report must not rerun every merge.
"""

from __future__ import annotations

from typing import Any


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys, e.g. {"per_type.Disease.f1": 0.55}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def format_number(value: float | None) -> str:
    """Four significant digits, "—" for a metric that was not measured."""
    return "—" if value is None else f"{value:.4g}"


def with_interval(value: float | None, interval: tuple[float, float] | None) -> str:
    """`0.745 [0.701, 0.788]`: a metric and its interval, as tables show them."""
    if value is None or interval is None:
        return format_number(value)
    return f"{format_number(value)} [{format_number(interval[0])}, {format_number(interval[1])}]"
