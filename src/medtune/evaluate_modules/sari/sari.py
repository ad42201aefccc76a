"""SARI (Xu et al., 2016) for text simplification, as an offline `evaluate` module over `medtune.metrics.sari`."""

import datasets
import evaluate

from medtune.metrics import sari


class Sari(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="SARI compares a simplification with its source and references: n-grams kept, added, deleted.",
            citation="Xu, Napoles, Pavlick, Chen, Callison-Burch. Optimizing Statistical Machine Translation for "
            "Text Simplification. TACL 2016.",
            inputs_description="sources: list of str; predictions: list of str; references: list of list of str.",
            features=datasets.Features(
                {
                    "sources": datasets.Value("string"),
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, sources, predictions, references):
        return {"sari": sari(sources, predictions, references)}
