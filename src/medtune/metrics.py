"""Task metrics: pure functions of strings (no model, no tokenizer).

`TEXT_METRICS` maps the names a task config lists under `metrics:` to functions of (sources, predictions,
references) -> per-example statistics, one number or list per example (medtune.bootstrap turns them into the
metric of the whole set, of a resample for its interval, or of a paired comparison); `score_texts` computes the
metrics a task asks for.
SARI is implemented here because `evaluate.load("sari")` fetches its script from the hub and fails offline.
The scoring libraries are imported where they are used: rouge_score pulls in nltk (~2.5 s), and the merge,
export and report stages import this module only for `direction`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from medtune.bootstrap import finish
from medtune.faithfulness import compare_quantities, copy_distance, medications

TERMINOLOGY_SECTIONS = ("Definition", "Explanation", "Clinical Relevance", "Note")
_SECTION_MARKER = re.compile(r"\*\*([A-Za-z ]+)\*\*:")
_DISCLAIMER = re.compile(
    r"educational (information|purposes)|not (a substitute|intended as|medical advice)|medical advice"
    r"|(consult|talk to|speak (to|with)|see|ask) (a|your) (doctor|physician|clinician|health ?care|nurse|pharmacist)",
    re.IGNORECASE,
)


def rouge_l_scores(predictions: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F1 (0-1, Porter stemming) of each prediction against its reference."""
    from rouge_score import rouge_scorer

    _check_lengths(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (0-1) over the predictions."""
    return _mean(rouge_l_scores(predictions, references))


def bleu_statistics(predictions: list[str], references: list[str]) -> list[list[int]]:
    """sacrebleu's per-sentence BLEU statistics (lengths, n-gram matches and totals): summed over any set of
    sentences they give that set's corpus BLEU (medtune.bootstrap)."""
    from sacrebleu.metrics import BLEU

    _check_lengths(predictions, references)
    return [[int(x) for x in row] for row in BLEU()._extract_corpus_statistics(predictions, [references])]


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) with sacrebleu's defaults (13a tokenization, one reference per prediction)."""
    import sacrebleu

    _check_lengths(predictions, references)
    return sacrebleu.corpus_bleu(predictions, [references]).score


def sari_scores(sources: list[str], predictions: list[str], references: list[list[str]]) -> list[float]:
    """Sentence SARI (0-100) of Xu et al. (2016), as in the reference implementations.

    Per n-gram order 1-4: F1 of kept n-grams, precision of deleted n-grams, F1 of added n-grams, against
    all references; text is lowercased and tokenized with sacrebleu's 13a tokenizer.
    """
    _check_lengths(predictions, references)
    _check_lengths(sources, predictions)
    return [100 * _sari_sentence(s, p, refs) for s, p, refs in zip(sources, predictions, references, strict=True)]


def sari(sources: list[str], predictions: list[str], references: list[list[str]]) -> float:
    """Corpus SARI (0-100): the mean sentence SARI."""
    return _mean(sari_scores(sources, predictions, references))


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


def fkgl_scores(texts: list[str]) -> list[float]:
    """Flesch-Kincaid grade level (textstat) of each text: lower is easier to read."""
    import textstat

    if not texts:
        raise ValueError("no texts to score")
    return [textstat.flesch_kincaid_grade(t) for t in texts]


def fkgl(texts: list[str]) -> float:
    """Mean Flesch-Kincaid grade level of the texts."""
    return _mean(fkgl_scores(texts))


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


def _flags(flags: list[bool]) -> list[float]:
    if not flags:
        raise ValueError("no predictions to score")
    return [float(flag) for flag in flags]


def _mean(scores: list[float]) -> float:
    return sum(scores) / len(scores)


def _check_lengths(a: list, b: list) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions but {len(b)} references")
    if not a:
        raise ValueError("no predictions to score")


def quantity_statistics(sources: list[str], predictions: list[str]) -> dict[str, list[list[int]]]:
    """Per example `[count, of how many]` for quantities_preserved / _altered (of the source's quantities) and
    quantities_invented (of the output's): see medtune.faithfulness."""
    _check_lengths(sources, predictions)
    found = [compare_quantities(s, p) for s, p in zip(sources, predictions, strict=True)]
    return {
        "quantities_preserved": [[c.preserved, c.source_total] for c in found],
        "quantities_altered": [[c.altered, c.source_total] for c in found],
        "quantities_invented": [[c.invented, c.output_total] for c in found],
    }


def medication_statistics(sources: list[str], predictions: list[str]) -> dict[str, list[list[int]]]:
    """Per example `[count, of how many]` for medications_preserved (of the lexicon names in the source) and
    medications_invented (of those in the output)."""
    _check_lengths(sources, predictions)
    pairs = [(medications(s), medications(p)) for s, p in zip(sources, predictions, strict=True)]
    return {
        "medications_preserved": [[len(s & p), len(s)] for s, p in pairs],
        "medications_invented": [[len(p - s), len(p)] for s, p in pairs],
    }


def copy_flags(sources: list[str], predictions: list[str], max_distance: float) -> list[float]:
    """1 for an output within `max_distance` (word edit distance over length) of its source, else 0."""
    _check_lengths(sources, predictions)
    return _flags([copy_distance(s, p) <= max_distance for s, p in zip(sources, predictions, strict=True)])


TEXT_METRICS: dict[str, Callable[[list[str], list[str], list[str]], list]] = {
    "rouge_l": lambda sources, predictions, references: rouge_l_scores(predictions, references),
    "bleu": lambda sources, predictions, references: bleu_statistics(predictions, references),
    "sari": lambda sources, predictions, references: sari_scores(sources, predictions, [[r] for r in references]),
    "fkgl_output": lambda sources, predictions, references: fkgl_scores(predictions),
    "fkgl_source": lambda sources, predictions, references: fkgl_scores(sources),
    "format_adherence": lambda sources, predictions, references: _flags(
        [follows_terminology_format(p) for p in predictions]
    ),
    "disclaimer_rate": lambda sources, predictions, references: _flags([has_disclaimer(p) for p in predictions]),
    "fkgl_delta": lambda sources, predictions, references: [
        o - s for o, s in zip(fkgl_scores(predictions), fkgl_scores(sources), strict=True)
    ],
    "copy_rate": lambda sources, predictions, references: copy_flags(sources, predictions, 0.0),
}
# Metrics scored together in one pass over the texts (each function gives all of its names)
GROUPED_METRICS: dict[str, Callable[[list[str], list[str]], dict[str, list]]] = {
    **dict.fromkeys(("quantities_preserved", "quantities_altered", "quantities_invented"), quantity_statistics),
    **dict.fromkeys(("medications_preserved", "medications_invented"), medication_statistics),
}
KNOWN_METRICS = (*TEXT_METRICS, "near_copy_rate", *GROUPED_METRICS)  # medtune.config.METRIC_NAMES, which checks

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
    "fkgl_delta": -1,  # reading grade of the output minus the source's: a simplification should lower it
    "copy_rate": -1,  # outputs that are their source (case, spacing and punctuation aside): nothing simplified
    "near_copy_rate": -1,
    "quantities_preserved": 1,
    "quantities_altered": -1,
    "quantities_invented": -1,
    "medications_preserved": 1,
    "medications_invented": -1,
    "acc": 1,  # benchmark accuracy of the harness stage (medtune.harness), and its length-normalised variant
    "acc_norm": 1,
    "exact_match": 1,  # the forgetting check (medtune.forgetting): answers that contain the expected short answer
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


def entity_statistics(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, list[list[int]]]:
    """Per sentence `[true positives, predicted, gold]` entity counts under the rules of `seqeval_scores`, over
    all types (`entities`) and per type (`entities.<type>`): summed over the sentences they give its scores."""
    from seqeval.scheme import IOB2, Entities

    gold_entities, predicted_entities = (Entities(tags, IOB2, suffix=False) for tags in (gold, predicted))
    kinds = sorted(gold_entities.unique_tags | predicted_entities.unique_tags)
    stats: dict[str, list[list[int]]] = {"entities": [], **{f"entities.{kind}": [] for kind in kinds}}
    for g, p in zip(gold_entities.entities, predicted_entities.entities, strict=True):
        g, p = {e.to_tuple() for e in g}, {e.to_tuple() for e in p}
        stats["entities"].append([len(g & p), len(p), len(g)])
        for kind in kinds:
            g_kind, p_kind = {e for e in g if e[1] == kind}, {e for e in p if e[1] == kind}
            stats[f"entities.{kind}"].append([len(g_kind & p_kind), len(p_kind), len(g_kind)])
    return stats


def tag_confusion(gold: list[list[str]], predicted: list[list[str]]) -> list[dict]:
    """One `{"actual", "predicted"}` row per word: the data of DVC's confusion-matrix plot template."""
    return [
        {"actual": g, "predicted": p}
        for gs, ps in zip(gold, predicted, strict=True)
        for g, p in zip(gs, ps, strict=True)
    ]


def text_statistics(
    names: list[str],
    sources: list[str],
    predictions: list[str],
    references: list[str],
    near_copy_distance: float,
) -> dict:
    """`{name: per-example statistics}` for each metric a task config lists (names checked when params are read).
    `near_copy_rate` counts outputs within `near_copy_distance` of their source (`eval.near_copy_distance`)."""
    stats: dict[str, list] = {}
    for name in names:
        if name in GROUPED_METRICS and name not in stats:
            stats.update(GROUPED_METRICS[name](sources, predictions))
        elif name == "near_copy_rate":
            stats[name] = copy_flags(sources, predictions, near_copy_distance)
        elif name in TEXT_METRICS:
            stats[name] = TEXT_METRICS[name](sources, predictions, references)
    return {name: stats[name] for name in names}


def score_texts(
    names: list[str], sources: list[str], predictions: list[str], references: list[str], near_copy_distance: float
) -> dict:
    """`{name: value}` of the whole set for each metric a task config lists."""
    stats = text_statistics(names, sources, predictions, references, near_copy_distance)
    return {name: finish(name, rows) for name, rows in stats.items()}
