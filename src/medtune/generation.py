"""Batched inference: greedy generation, response perplexity, and word tags from a token classifier.

Prompts are sorted by length and left-padded so a batch wastes few pad tokens; in fp32 the outputs equal
one-prompt-at-a-time generation (pinned by a test).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from medtune.data import split_words
from medtune.tasks import IGNORE_INDEX, tokenize_tagged


@dataclass
class Generations:
    texts: list[str]  # in the order of the prompts given
    new_tokens: int  # generated tokens, padding and tokens after the end of turn excluded
    seconds: float

    @property
    def ms_per_token(self) -> float:
        return 1000 * self.seconds / max(self.new_tokens, 1)


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int) -> Generations:
    """Greedy completions of rendered prompts, batched by length with left padding."""
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer(prompts[i], add_special_tokens=False).input_ids))
    texts: list[str] = [""] * len(prompts)
    new_tokens, start = 0, time.perf_counter()
    for b in tqdm(range(0, len(order), batch_size), desc="generating", unit="batch"):
        idx = order[b : b + batch_size]
        batch = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **batch.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for i, row in zip(idx, out[:, batch.input_ids.shape[1] :], strict=True):
            ids = row.tolist()
            if tokenizer.eos_token_id in ids:
                ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
            new_tokens += len(ids)
            texts[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return Generations(texts, new_tokens, time.perf_counter() - start)


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    batch_size: int,
    sampling: dict,
    seed: int,
) -> list[list[str]]:
    """`n` sampled completions of each rendered prompt (`sampling`: generate's temperature, top_p, ...). Each batch
    reseeds torch's generator from `seed` and its position, so the answers are the same on every run on one machine,
    whatever ran before."""
    tokenizer.padding_side = "left"
    answers: list[list[str]] = []
    for b in tqdm(range(0, len(prompts), batch_size), desc="sampling", unit="batch"):
        torch.manual_seed(seed + b)
        batch = tokenizer(prompts[b : b + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **batch.to(model.device),
            do_sample=True,
            num_return_sequences=n,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **sampling,
        )
        texts = tokenizer.batch_decode(out[:, batch.input_ids.shape[1] :], skip_special_tokens=True)
        answers += [[t.strip() for t in texts[i : i + n]] for i in range(0, len(texts), n)]
    return answers


def _right_padded(batch: list[dict], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and labels of pre-tokenized examples, right-padded to the longest."""
    width = max(len(e["input_ids"]) for e in batch)
    pad = [width - len(e["input_ids"]) for e in batch]
    ids = torch.tensor([e["input_ids"] + [pad_token_id] * n for e, n in zip(batch, pad, strict=True)])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * n for e, n in zip(batch, pad, strict=True)])
    labels = torch.tensor([e["labels"] + [IGNORE_INDEX] * n for e, n in zip(batch, pad, strict=True)])
    return ids, mask, labels


def target_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose next token is a target in at least one row: where the LM head must run."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)


def response_nll(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "sum"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the labelled tokens and which tokens are labelled, from logits computed only at
    `target_positions(labels)`: the training loss and the evaluate stage's perplexity are this one computation.
    `reduction="sum"` gives one sum (training); "none" one value per token, rows x positions, which evaluate sums
    per example. The mask of labelled tokens has the same rows x positions shape."""
    targets = labels[:, 1:][:, target_positions(labels)]
    nll = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction
    )
    return (nll.view_as(targets) if reduction == "none" else nll), targets != IGNORE_INDEX


@torch.no_grad()
def example_nll(model: Any, examples: list[dict], batch_size: int, pad_token_id: int) -> list[list[float]]:
    """`[summed negative log-likelihood, labelled tokens]` of each pre-tokenized `{"input_ids", "labels"}` example:
    perplexity's per-example statistics (medtune.bootstrap). The LM head runs only at the positions that predict a
    labelled token (`logits_to_keep`), as in training: SmolLM2's 49k-word logits over every prompt position took half
    of the evaluate stage's scoring time."""
    rows = []
    for b in tqdm(range(0, len(examples), batch_size), desc="perplexity", unit="batch"):
        ids, mask, labels = (t.to(model.device) for t in _right_padded(examples[b : b + batch_size], pad_token_id))
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=target_positions(labels)).logits
        nll, labelled = response_nll(logits, labels, reduction="none")
        rows += [[n, c] for n, c in zip(nll.sum(1).tolist(), labelled.sum(1).tolist(), strict=True)]
    return rows


def perplexity(model: Any, examples: list[dict], batch_size: int, pad_token_id: int) -> float:
    """exp(mean negative log-likelihood per labelled token) over the examples."""
    rows = example_nll(model, examples, batch_size, pad_token_id)
    return math.exp(sum(n for n, _ in rows) / sum(c for _, c in rows))


@torch.no_grad()
def predict_tags(
    model: Any, examples: list[dict], labels: list[str], batch_size: int, ids: list[str]
) -> list[list[str]]:
    """Predicted tag of each word (at its first sub-token) per record, windows joined back in order.

    `examples` are tokenized windows `{"id", "window", "input_ids", "labels"}`; labels only mark word starts.
    Batches hold windows of similar length: in corpus order, a batch is padded to its longest sentence (BC5CDR's
    test split: 2.8x the tokens it holds, 1.02x sorted).
    """
    by_record: dict[str, list[tuple[int, list[str]]]] = {}
    examples = sorted(examples, key=lambda e: len(e["input_ids"]))
    for b in tqdm(range(0, len(examples), batch_size), desc="tagging", unit="batch"):
        batch = examples[b : b + batch_size]
        input_ids, mask, _ = _right_padded(batch, 0)  # the pad id is masked out, so any id does
        best = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits.argmax(-1)
        for e, row in zip(batch, best.tolist(), strict=True):
            tags = [labels[p] for p, gold in zip(row, e["labels"], strict=False) if gold != IGNORE_INDEX]
            by_record.setdefault(e["id"], []).append((e["window"], tags))
    return [[tag for _, tags in sorted(by_record[i]) for tag in tags] for i in ids]


def extract_entities(
    model: Any, tokenizer: Any, texts: list[str], labels: list[str], max_length: int, batch_size: int
) -> list[list[dict]]:
    """Entities `{"text", "type", "start", "end"}` (character offsets into each text) found by a token classifier."""
    words = [split_words(text) for text in texts]
    records = [{"id": str(i), "tokens": [w for w, _, _ in ws], "tags": ["O"] * len(ws)} for i, ws in enumerate(words)]
    records = [r for r in records if r["tokens"]]  # a text without words has no entities
    examples = [e for r in records for e in tokenize_tagged(tokenizer, r, {"O": 0}, max_length)]
    ids = [r["id"] for r in records]
    tags = dict(zip(ids, predict_tags(model, examples, labels, batch_size, ids), strict=True)) if ids else {}
    texts_words = enumerate(zip(texts, words, strict=True))
    return [entities_from_tags(text, ws, tags.get(str(i), [])) for i, (text, ws) in texts_words]


def entities_from_tags(text: str, words: list[tuple[str, int, int]], tags: list[str]) -> list[dict]:
    """Spans of B-X I-X... tags over the `words` of `text` (split_words: each with its character offsets); an I-X
    that continues nothing starts an entity, as seqeval's default mode reads it."""
    entities: list[dict] = []
    current = None
    for (_, start, end), tag in zip(words, tags, strict=True):
        if current and tag == f"I-{current['type']}":
            current["end"] = end
            continue
        current = {"type": tag[2:], "start": start, "end": end} if tag != "O" else None
        if current:
            entities.append(current)
    return [{"text": text[e["start"] : e["end"]], **e} for e in entities]
