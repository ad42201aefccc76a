"""medtune's metrics load offline through Hugging Face `evaluate` and give the same numbers."""

from __future__ import annotations

import pytest

from medtune.evaluate_modules import module_path

evaluate = pytest.importorskip("evaluate")  # optional for users; installed with the [dev] extra, so CI runs this


def test_sari_module_gives_the_published_value(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sari = evaluate.load(module_path("sari"))
    result = sari.compute(
        sources=["About 95 species are currently accepted."],
        predictions=["About 95 you now get in."],
        references=[
            [
                "About 95 species are currently known.",
                "About 95 species are now accepted.",
                "95 species are now accepted.",
            ]
        ],
    )
    assert result == {"sari": pytest.approx(26.953601953601954)}


def test_terminology_format_module():
    good = (
        "**Definition**: a.\n**Explanation**: b.\n**Clinical Relevance**: c.\n**Note**: Educational information only."
    )
    predictions = [good, "Just prose.", "Just prose; ask your doctor.", "More prose."]
    result = evaluate.load(module_path("terminology_format")).compute(predictions=predictions)
    assert result == {"format_adherence": 0.25, "disclaimer_rate": 0.5}
    with pytest.raises(ValueError, match="no medtune evaluate module 'bleu'"):
        module_path("bleu")
