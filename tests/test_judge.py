"""The optional judge: parses replies robustly and talks to an OpenAI-compatible server (a fake one on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from omegaconf import OmegaConf

from conftest import ROOT
from medtune.config import JudgeConfig, load_params
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
    """Answers in turn: a good reply, prose, an unparseable reply, an HTTP error."""

    replies = [
        '{"clarity": 8, "accuracy": 6, "meaning_preservation": 7}',
        "clarity 6, accuracy 8, meaning preservation 9",
        "no idea",
        None,
    ]
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        reply = FakeJudge.replies[(len(FakeJudge.requests) - 1) % len(FakeJudge.replies)]
        if reply is None:
            self.send_error(500)
            return
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    server = HTTPServer(("127.0.0.1", 0), FakeJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeJudge.requests = []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_judge_scores_good_replies_and_counts_bad_ones(fake_server, monkeypatch):
    monkeypatch.setenv("MEDTUNE_TEST_KEY", "secret-key")
    cfg = OmegaConf.structured(
        JudgeConfig(enabled=True, url=fake_server, model="judge-1", api_key_env="MEDTUNE_TEST_KEY")
    )
    result = judge_simplifications(cfg, ["src a", "src b", "src c", "src d"], ["out a", "out b", "out c", "out d"])
    assert result == {
        "judge_rated": 2,
        "judge_failed": 2,
        "judge_clarity": 7.0,
        "judge_accuracy": 7.0,
        "judge_meaning_preservation": 8.0,
    }
    first = FakeJudge.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer secret-key"
    assert first["body"]["model"] == "judge-1" and "src a" in first["body"]["messages"][1]["content"]


def test_judge_is_off_by_default_and_needs_an_explicit_endpoint():
    judge = load_params(ROOT / "params.yaml").judge
    assert judge.enabled is False and judge.url is None
    with pytest.raises(ConfigError, match="judge.url"):
        judge_simplifications(OmegaConf.structured(JudgeConfig(enabled=True)), ["s"], ["o"])
