import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from usersim.data_prep.annotator import (AnnotatorError, OpenAICompatibleAnnotator, annotate_or_fallback, make_annotator,
                                         parse_annotation)
from usersim.data_prep.config import AnnotatorConfig
from usersim.data_prep.schema import Conversation, Turn

CONV = Conversation(id="c", source="s", user_id="u", turns=[Turn("user", "my cat is sick, what should I do?"),
                                                            Turn("assistant", "See a vet.")])


class Stub(BaseHTTPRequestHandler):
    requests: list = []
    mode = "ok"

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Stub.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if Stub.mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        content = 'Sure: {"goal": "get advice for a sick cat", "persona": "a worried pet owner"}'
        if Stub.mode == "garbage":
            content = "I cannot do that"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Stub.requests, Stub.mode = [], "ok"
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_openai_compatible_annotator_against_stub(server, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-secret-123")
    ann = make_annotator(AnnotatorConfig(kind="openai", model="m", base_url=server + "/", api_key_env="STUB_KEY"))
    assert isinstance(ann, OpenAICompatibleAnnotator) and "sk-secret" not in repr(ann)
    assert ann.annotate(CONV, ["goal", "persona"]) == {"goal": "get advice for a sick cat",
                                                      "persona": "a worried pet owner"}
    req = Stub.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-secret-123"
    assert req["body"]["model"] == "m" and "my cat is sick" in req["body"]["messages"][0]["content"]


@pytest.mark.parametrize("mode", ["error", "garbage"])
def test_failures_fall_back_to_heuristic_and_are_counted(server, mode):
    Stub.mode = mode
    ann = OpenAICompatibleAnnotator(AnnotatorConfig(kind="openai", base_url=server, api_key_env="NO_SUCH_ENV_VAR"))
    with pytest.raises(AnnotatorError) as err:
        ann.annotate(CONV, ["goal"])
    counts = Counter()
    heuristic = {"goal": "my cat is sick", "persona": ""}
    assert annotate_or_fallback(ann, CONV, ["goal"], heuristic, counts) == heuristic
    assert counts == Counter({"fallback": 1})
    assert Stub.requests[-1]["auth"] is None
    assert "127.0.0.1" in str(err.value) or "JSON" in str(err.value)


def test_timeout_falls_back():
    # A listening socket that never answers: the request must time out, not hang.
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        ann = OpenAICompatibleAnnotator(AnnotatorConfig(kind="openai", base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
                                                        timeout_s=0.5))
        counts = Counter()
        assert annotate_or_fallback(ann, CONV, ["goal"], {"goal": "h"}, counts) == {"goal": "h"}
        assert counts["fallback"] == 1
    finally:
        sock.close()


def test_success_overrides_only_requested_fields(server):
    ann = make_annotator(AnnotatorConfig(kind="openai", base_url=server))
    counts = Counter()
    out = annotate_or_fallback(ann, CONV, ["goal"], {"goal": "h", "persona": "p"}, counts)
    assert out == {"goal": "get advice for a sick cat", "persona": "p"} and counts == Counter({"annotated_goal": 1})


def test_parse_and_config_errors():
    assert parse_annotation('```json\n{"goal": "x  y"}\n```', ["goal", "persona"]) == {"goal": "x y"}
    with pytest.raises(AnnotatorError):
        parse_annotation("{not json}", ["goal"])
    assert make_annotator(AnnotatorConfig()) is None
    with pytest.raises(ValueError, match="base_url"):
        make_annotator(AnnotatorConfig(kind="openai"))
    with pytest.raises(ValueError, match="style"):
        make_annotator(AnnotatorConfig(kind="openai", base_url="http://x", fields=["style"]))
    with pytest.raises(ValueError, match="kind"):
        make_annotator(AnnotatorConfig(kind="gpt"))
