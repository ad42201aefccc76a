"""Stage `scope`: train the scope guard of chat and serve, and measure it on questions it never saw.

Reads params: scope.{c,threshold}.
    python -m stages.scope data/raw/scope_train.jsonl data/raw/scope.jsonl models/scope metrics/scope
Embeds the authored training questions with all-MiniLM-L6-v2 (offline, from its PyPI package), fits a logistic
regression, and writes models/scope/classifier.json, metrics/scope/eval.json (accuracy, false refusals, false
acceptances on the separate evaluation set) and metrics/scope/errors.jsonl (every misjudged question, to review).
"""

import argparse
from pathlib import Path

from medtune.config import load_params
from medtune.console import log, run_main
from medtune.data import normalise_key
from medtune.errors import DataError
from medtune.io import atomic_dir, write_json, write_jsonl
from medtune.scope import ScopeClassifier, embed, load_embedder, read_scope_questions, scope_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_file", type=Path)
    parser.add_argument("eval_file", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("metrics_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    train, test = read_scope_questions(args.train_file), read_scope_questions(args.eval_file)
    shared = {normalise_key(q["text"]) for q in train} & {normalise_key(q["text"]) for q in test}
    if shared:
        raise DataError(
            str(args.eval_file), f"{len(shared)} question(s) also in {args.train_file}, e.g. {min(shared)!r}"
        )
    log.info("Embedding %d training and %d evaluation questions", len(train), len(test))
    embedder = load_embedder()
    classifier = ScopeClassifier.fit(
        embed(embedder, [q["text"] for q in train]),
        [q["in_scope"] for q in train],
        params.scope.c,
        params.scope.threshold,
    )
    probabilities = [classifier.probability(v) for v in embed(embedder, [q["text"] for q in test])]
    metrics = scope_metrics(test, probabilities, classifier.threshold)
    log.info(
        "Scope guard on %s: accuracy %.3f, refused %.1f%% of health questions, answered %.1f%% of off-topic ones",
        args.eval_file,
        metrics["accuracy"],
        100 * metrics["false_refusal_rate"],
        100 * metrics["false_acceptance_rate"],
    )
    with atomic_dir(args.out_dir) as tmp:
        classifier.save(tmp / "classifier.json")
    write_json(args.metrics_dir / "eval.json", metrics)
    errors = [
        {**q, "p_in_scope": round(p, 4)}
        for q, p in zip(test, probabilities, strict=True)
        if (p >= classifier.threshold) != q["in_scope"]
    ]
    write_jsonl(args.metrics_dir / "errors.jsonl", errors)


if __name__ == "__main__":
    run_main(main)
