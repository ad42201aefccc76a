"""The optional judge: parses replies robustly and talks to an OpenAI-compatible server (a fake one on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from conftest import ROOT, a_judge
from medtune.config import validate
from medtune.errors import ConfigError
from medtune.judge import judge_simplifications, parse_scores


@pytest.mark.parametrize(
    ("reply", "scores"),
    [
        ('{"clarity": 7, "accuracy": 9, "meaning_preservation": 8}', (7, 9, 8)),
        ('Here you go:\n```json\n{"clarity": "6", "accuracy": 5, "meaning_preservation": 10}\n```', (6, 5, 10)),
        ("Clarity: 8/10\nAccuracy - 7\nMeaning preservation: 9", (8, 7, 9)),
        ('{"clarity": 11, "accuracy": 9, "meaning_preservation": 8}', None),  # out of range
        ('{"clarity": 7, "accuracy": 9}', None),  # a criterion missing
        ("I cannot rate medical content.", None),
    ],
)
def test_parse_scores(reply, scores):
    parsed = parse_scores(reply)
    assert (tuple(parsed.values()) if parsed else None) == scores


class FakeJudge(BaseHTTPRequestHandler):
    """Answers in turn: a good reply, prose, an unparseable reply, an HTTP error. A reply is the judge's text
    (str), an HTTP error status (int), or a whole response body (bytes)."""

    replies: list[str | int | bytes] = [
        '{"clarity": 8, "accuracy": 6, "meaning_preservation": 7}',
        "clarity 4, accuracy 9, meaning preservation 10",
        "no idea",
        500,
    ]
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        reply = FakeJudge.replies[(len(FakeJudge.requests) - 1) % len(FakeJudge.replies)]
        if isinstance(reply, int):
            self.send_error(reply)
            return
        if isinstance(reply, str):
            reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        payload = reply
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    FakeJudge.requests = []
    server = HTTPServer(("127.0.0.1", 0), FakeJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_judge_scores_good_replies_and_counts_bad_ones(fake_server, monkeypatch):
    monkeypatch.setenv("MEDTUNE_TEST_KEY", "secret-key")
    cfg = a_judge(enabled=True, url=fake_server, model="judge-1", api_key_env="MEDTUNE_TEST_KEY")
    result = judge_simplifications(cfg, ["src a", "src b", "src c", "src d"], ["out a", "out b", "out c", "out d"])
    assert result == {
        "judge_rated": 2,
        "judge_failed": 2,
        "judge_clarity": 6.0,
        "judge_accuracy": 7.5,
        "judge_meaning_preservation": 8.5,
    }
    first = FakeJudge.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer secret-key"
    assert first["body"]["model"] == "judge-1" and "src a" in first["body"]["messages"][1]["content"]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (401, "HTTP Error 401"),  # a missing or wrong API key
        (b'{"error": {"message": "no such route"}}', "not an OpenAI chat completion"),  # not an OpenAI endpoint
    ],
)
def test_a_judge_that_rates_nothing_because_every_request_failed_is_a_config_error(
    fake_server, monkeypatch, reply, message
):
    monkeypatch.setattr(FakeJudge, "replies", [reply])
    cfg = a_judge(enabled=True, url=fake_server, model="judge-1")

    with pytest.raises(ConfigError, match=rf"judge\.url.*{message}"):
        judge_simplifications(cfg, ["src a", "src b"], ["out a", "out b"])
    assert len(FakeJudge.requests) == 2


def test_a_judge_that_only_writes_unparseable_replies_gives_no_scores(fake_server, monkeypatch):
    monkeypatch.setattr(FakeJudge, "replies", ["I cannot rate medical content."])
    cfg = a_judge(enabled=True, url=fake_server, model="judge-1")

    result = judge_simplifications(cfg, ["src a"], ["out a"])

    assert result["judge_rated"] == 0 and result["judge_failed"] == 1 and result["judge_clarity"] is None


def test_judge_is_off_by_default_and_needs_an_explicit_endpoint():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert raw["judge"]["enabled"] is False and raw["judge"]["url"] is None
    raw["judge"]["enabled"] = True
    with pytest.raises(ConfigError, match=r"judge\.url.*set judge\.url and judge\.model"):
        validate(raw)
