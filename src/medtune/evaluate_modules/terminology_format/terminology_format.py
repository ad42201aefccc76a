"""Format adherence and disclaimer rate of terminology explanations, as an offline `evaluate` module."""

import datasets
import evaluate

from medtune.metrics import score_texts


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
        # the evaluate stage's own scores (medtune.metrics), so the two can never disagree
        names = ["format_adherence", "disclaimer_rate"]  # read the predictions alone: no source, no copy distance
        return score_texts(names, [], predictions, [], near_copy_distance=0.0)
