"""Task metrics: pure functions of strings (no model, no tokenizer).

`TEXT_METRICS` maps the names a task config lists under `metrics:` to functions of
(sources, predictions, references) -> float; `score_texts` computes the ones a task asks for.
SARI is implemented here because `evaluate.load("sari")` fetches its script from the hub and fails offline.
The scoring libraries are imported where they are used: rouge_score pulls in nltk (~2.5 s), and the merge,
export and report stages import this module only for `direction`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from medtune.errors import ConfigError

TERMINOLOGY_SECTIONS = ("Definition", "Explanation", "Clinical Relevance", "Note")
_SECTION_MARKER = re.compile(r"\*\*([A-Za-z ]+)\*\*:")
_DISCLAIMER = re.compile(
    r"educational (information|purposes)|not (a substitute|intended as|medical advice)|medical advice"
    r"|(consult|talk to|speak (to|with)|see|ask) (a|your) (doctor|physician|clinician|health ?care|nurse|pharmacist)",
    re.IGNORECASE,
)


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (0-1, Porter stemming) of each prediction against its reference."""
    from rouge_score import rouge_scorer

    _check_lengths(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]
    return sum(scores) / len(scores)


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) with sacrebleu's defaults (13a tokenization, one reference per prediction)."""
    import sacrebleu

    _check_lengths(predictions, references)
    return sacrebleu.corpus_bleu(predictions, [references]).score


def sari(sources: list[str], predictions: list[str], references: list[list[str]]) -> float:
    """Corpus SARI (0-100): mean sentence SARI of Xu et al. (2016), as in the reference implementations.

    Per n-gram order 1-4: F1 of kept n-grams, precision of deleted n-grams, F1 of added n-grams, against
    all references; text is lowercased and tokenized with sacrebleu's 13a tokenizer.
    """
    _check_lengths(predictions, references)
    _check_lengths(sources, predictions)
    scores = [_sari_sentence(s, p, refs) for s, p, refs in zip(sources, predictions, references, strict=True)]
    return 100 * sum(scores) / len(scores)


def _sari_sentence(source: str, prediction: str, references: list[str]) -> float:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()
    src, pred = tokenize(source.lower()).split(), tokenize(prediction.lower()).split()
    refs = [tokenize(r.lower()).split() for r in references]
    per_order = [_sari_ngrams(_ngrams(src, n), _ngrams(pred, n), [_ngrams(r, n) for r in refs]) for n in (1, 2, 3, 4)]
    keep, delete, add = (sum(scores) / 4 for scores in zip(*per_order, strict=True))
    return (keep + delete + add) / 3


def _ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _sari_ngrams(source: list[str], prediction: list[str], references: list[list[str]]) -> tuple[float, float, float]:
    """(keep F1, deletion precision, addition F1) for one n-gram order; 0/0 counts as 1 (perfect)."""
    n_refs = len(references)
    ref_counts = Counter(g for ref in references for g in ref)
    src, pred = Counter(source), Counter(prediction)
    src_rep = Counter({g: c * n_refs for g, c in src.items()})  # scaled so counts compare with all references
    pred_rep = Counter({g: c * n_refs for g, c in pred.items()})

    kept = src_rep & pred_rep
    kept_good, kept_all = kept & ref_counts, src_rep & ref_counts
    keep_p = sum(kept_good[g] / kept[g] for g in kept) / len(kept) if kept else 1.0
    keep_r = sum(kept_good.values()) / sum(kept_all.values()) if kept_all else 1.0

    deleted = src_rep - pred_rep
    deleted_good = deleted - ref_counts
    delete_p = sum(deleted_good[g] / deleted[g] for g in deleted) / len(deleted) if deleted else 1.0

    added, ref_new = set(pred) - set(src), set(ref_counts) - set(src)
    added_good = added & set(ref_counts)
    add_p = len(added_good) / len(added) if added else 1.0
    add_r = len(added_good) / len(ref_new) if ref_new else 1.0
    return _f1(keep_p, keep_r), delete_p, _f1(add_p, add_r)


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def fkgl(texts: list[str]) -> float:
    """Mean Flesch-Kincaid grade level (textstat) of the texts: lower is easier to read."""
    import textstat

    if not texts:
        raise ValueError("no texts to score")
    return sum(textstat.flesch_kincaid_grade(t) for t in texts) / len(texts)


def follows_terminology_format(text: str) -> bool:
    """True when `text` is exactly the four sections **Definition**, **Explanation**, **Clinical Relevance**,
    **Note**, in that order, each non-empty, with nothing but white space before the first."""
    parts = _SECTION_MARKER.split(text)
    # split gives [before, name1, body1, name2, body2, ...]
    names, bodies = parts[1::2], parts[2::2]
    return (
        parts[0].strip() == ""
        and tuple(n.strip() for n in names) == TERMINOLOGY_SECTIONS
        and all(body.strip() for body in bodies)
    )


def has_disclaimer(text: str) -> bool:
    """True when the text carries a safety disclaimer (educational only / not medical advice / see a clinician)."""
    return _DISCLAIMER.search(text) is not None


def _share(flags: list[bool]) -> float:
    if not flags:
        raise ValueError("no predictions to score")
    return sum(flags) / len(flags)


def _check_lengths(a: list, b: list) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions but {len(b)} references")
    if not a:
        raise ValueError("no predictions to score")


TEXT_METRICS: dict[str, Callable[[list[str], list[str], list[str]], float]] = {
    "rouge_l": lambda sources, predictions, references: rouge_l(predictions, references),
    "bleu": lambda sources, predictions, references: bleu(predictions, references),
    "sari": lambda sources, predictions, references: sari(sources, predictions, [[r] for r in references]),
    "fkgl_output": lambda sources, predictions, references: fkgl(predictions),
    "fkgl_source": lambda sources, predictions, references: fkgl(sources),
    "format_adherence": lambda sources, predictions, references: _share(
        [follows_terminology_format(p) for p in predictions]
    ),
    "disclaimer_rate": lambda sources, predictions, references: _share([has_disclaimer(p) for p in predictions]),
}


# Which way is better, for reports and experiment tables: +1 higher, -1 lower. Metrics are looked up by their
# last name (`per_type.Disease.f1` -> `f1`); counts and context (examples, support, fkgl_source) have no direction.
DIRECTION: dict[str, int] = {
    "rouge_l": 1,
    "bleu": 1,
    "sari": 1,
    "fkgl_output": -1,  # reading grade of the output: plainer language is the goal of simplification
    "format_adherence": 1,
    "disclaimer_rate": 1,
    "perplexity": -1,
    "ms_per_token": -1,
    "ms_per_sentence": -1,
    "precision": 1,
    "recall": 1,
    "f1": 1,
    "eval_loss": -1,
    "judge_clarity": 1,
    "judge_accuracy": 1,
    "judge_meaning_preservation": 1,
    "judge_failed": -1,
}


def direction(metric: str) -> int | None:
    """+1 if higher is better for this (possibly dotted) metric name, -1 if lower is, None if it has no direction."""
    return DIRECTION.get(metric.rsplit(".", 1)[-1])


def seqeval_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Entity-level micro precision/recall/F1 and per-type scores, seqeval in strict IOB2 mode (an entity counts
    only when its type and exact span match; invalid sequences such as an orphan I- are not entities)."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    report = classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    micro = report["micro avg"]
    per_type = {
        name: {"precision": r["precision"], "recall": r["recall"], "f1": r["f1-score"], "support": int(r["support"])}
        for name, r in report.items()
        if not name.endswith(" avg")
    }
    return {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1-score"], "per_type": per_type}


def tag_confusion(gold: list[list[str]], predicted: list[list[str]]) -> list[dict]:
    """One `{"actual", "predicted"}` row per word: the data of DVC's confusion-matrix plot template."""
    return [
        {"actual": g, "predicted": p}
        for gs, ps in zip(gold, predicted, strict=True)
        for g, p in zip(gs, ps, strict=True)
    ]


def check_metric_names(names: list[str], key: str = "tasks.<task>.metrics") -> None:
    """Refuse a name that is not in TEXT_METRICS, naming the config key that lists it."""
    unknown = [n for n in names if n not in TEXT_METRICS]
    if unknown:
        raise ConfigError(key, f"unknown metric {unknown[0]!r}; known: {', '.join(TEXT_METRICS)}")


def score_texts(names: list[str], sources: list[str], predictions: list[str], references: list[str]) -> dict:
    """`{name: value}` for each metric a task config lists; an unknown name is a config error."""
    check_metric_names(names)
    return {name: TEXT_METRICS[name](sources, predictions, references) for name in names}
