"""Format adherence and disclaimer rate of terminology explanations, as an offline `evaluate` module."""

import datasets
import evaluate

from medtune.metrics import follows_terminology_format, has_disclaimer


class TerminologyFormat(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Share of texts with the four sections **Definition**, **Explanation**, "
            "**Clinical Relevance**, **Note** in order and non-empty, and share carrying a safety disclaimer.",
            citation="",
            inputs_description="predictions: list of str.",
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions):
        n = len(predictions)
        return {
            "format_adherence": sum(map(follows_terminology_format, predictions)) / n,
            "disclaimer_rate": sum(map(has_disclaimer, predictions)) / n,
        }
