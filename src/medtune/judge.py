"""Optional LLM judge: an OpenAI-compatible chat endpoint rates simplifications 1-10 on a rubric.

Off by default. Nothing is sent anywhere unless `judge.enabled` is true and `judge.url` is set: the texts are
medical, so sending them out is the user's explicit decision. A reply that cannot be parsed, or a failed
request, is counted in `judge_failed` instead of stopping the evaluation; but when requests failed and no reply
at all could be rated, the endpoint is wrong (URL, key), and that is a ConfigError rather than scores of None.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import urllib.request
from typing import Any

from medtune.config import JudgeConfig
from medtune.errors import ConfigError

log = logging.getLogger(__name__)

CRITERIA = ("clarity", "accuracy", "meaning_preservation")
RUBRIC = (
    "You rate a plain-language rewrite of clinical text for a patient. Score each criterion from 1 (bad) to 10 "
    "(excellent): clarity (easy for a lay reader), accuracy (no false or added medical claims), "
    "meaning_preservation (every fact of the original kept). Reply with JSON only, for example "
    '{"clarity": 7, "accuracy": 9, "meaning_preservation": 8}.'
)


def parse_scores(reply: str) -> dict[str, int] | None:
    """The three 1-10 scores from a judge reply (JSON, or `name: n` prose); None when any is missing or invalid."""
    match = re.search(r"\{.*?\}", reply, re.DOTALL)
    scores: dict[str, Any] = {}
    if match:
        try:
            scores = json.loads(match.group(0))
        except json.JSONDecodeError:
            scores = {}
    if not isinstance(scores, dict) or not all(c in scores for c in CRITERIA):
        found = re.findall(r"(clarity|accuracy|meaning[ _]preservation)\W{0,3}(\d{1,2})\b", reply, re.IGNORECASE)
        scores = {name.lower().replace(" ", "_"): value for name, value in found}
    try:
        values = {c: int(scores[c]) for c in CRITERIA}
    except (KeyError, TypeError, ValueError):
        return None
    return values if all(1 <= v <= 10 for v in values.values()) else None


def judge_simplifications(cfg: JudgeConfig, sources: list[str], outputs: list[str]) -> dict[str, float | int | None]:
    """Mean judge scores over the first `cfg.max_examples` (source, output) pairs, plus rated/failed counts.
    `cfg.url` and `cfg.model` are set: params.yaml is refused without them when the judge is enabled."""
    api_key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    rated: list[dict[str, int]] = []
    failed = 0
    first_error: Exception | None = None
    for source, output in list(zip(sources, outputs, strict=True))[: cfg.max_examples]:
        user = f"Original clinical text:\n{source}\n\nPlain-language rewrite:\n{output}"
        try:
            scores = parse_scores(_chat(cfg.url, cfg.model, api_key, user, cfg.timeout_s))
        # network and HTTP failures (URLError and timeouts are OSErrors), and a body that is not a chat completion
        except (OSError, http.client.HTTPException, ValueError) as err:
            log.warning("judge request failed: %s", err)
            first_error = first_error or err
            scores = None
        if scores is None:
            failed += 1
        else:
            rated.append(scores)
    if not rated and first_error is not None:
        raise ConfigError(
            "judge.url", f"no reply could be rated; the first request to {cfg.url} failed: {first_error}"
        ) from first_error
    result: dict[str, float | int | None] = {"judge_rated": len(rated), "judge_failed": failed}
    for c in CRITERIA:
        result[f"judge_{c}"] = sum(r[c] for r in rated) / len(rated) if rated else None
    return result


def _chat(url: str, model: str, api_key: str, user: str, timeout: float) -> str:
    body = {
        "model": model,
        "temperature": 0,
        "messages": [{"role": "system", "content": RUBRIC}, {"role": "user", "content": user}],
    }
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return _content(json.loads(response.read()))


def _content(completion: Any) -> str:
    """The answer of an OpenAI chat completion. Any other shape (an error object from a server that is not
    OpenAI-compatible) is a ValueError saying so, counted as a failed request like an HTTP error."""
    try:
        content = completion["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError(
            f"not an OpenAI chat completion (no choices[0].message.content): {completion!r:.200}"
        ) from None
    if not isinstance(content, str):
        raise ValueError(f"not an OpenAI chat completion (message.content is {type(content).__name__})")
    return content
