"""The openai backend against a small fake OpenAI-compatible server on the loopback (no model, no vLLM)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import BaseModel

from kdsl.errors import ModelError
from kdsl.models import Message, backend_class, load_backend
from kdsl.models.openai_http import DEFAULT_BASE_URL, OpenAIBackend, parse_target


def _tokens(text: str) -> list[int]:
    """The fake tokenizer: one token per character."""
    return [ord(c) for c in text]


def _logprob(token: int, position: int) -> float:
    return -((token * 7 + position) % 13) / 4.0


class FakeServer:
    """Speaks just enough of vLLM's OpenAI API: /v1/models, /v1/chat/completions, /v1/completions, /tokenize."""

    def __init__(self) -> None:
        self.models: list[dict[str, Any]] = [{"id": "tiny", "parent": None}]
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.fail: tuple[int, str] | None = None  # (status, body) for the next POST
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: str | dict) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": server.models})
                else:
                    self._send(404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, payload))
                time.sleep(server.delay)
                if server.fail is not None:
                    status, body = server.fail
                    self._send(status, body)
                    return
                route = {"/v1/chat/completions": server.chat, "/v1/completions": server.completions,
                         "/tokenize": server.tokenize}.get(self.path)
                if route is None:
                    self._send(404, {"detail": "Not Found"})
                else:
                    self._send(200, route(payload))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps({"label": "refund", "n": 2}) if "response_format" in payload else f"hello from {payload['model']}"
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}

    def tokenize(self, payload: dict[str, Any]) -> dict[str, Any]:
        if "messages" in payload:
            text = "".join(f"<{m['role']}>{m['content']}" for m in payload["messages"]) + "<assistant>"
        else:
            text = ("^" if payload.get("add_special_tokens") else "") + payload["prompt"]
        return {"tokens": _tokens(text), "count": len(text)}

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert payload["echo"] is True and payload["logprobs"] == 0
        choices = []
        for index, ids in enumerate(payload["prompt"]):
            logprobs = [None] + [_logprob(t, i) for i, t in enumerate(ids) if i > 0] + [-0.5]
            choices.append({"index": index, "text": "x", "logprobs": {"token_logprobs": logprobs}})
        return {"choices": list(reversed(choices))}  # order by `index`, not by position in the answer

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def _expected(prompt_ids: list[int], label: str) -> float:
    ids = prompt_ids + _tokens(label)
    return sum(_logprob(ids[i], i) for i in range(len(prompt_ids), len(ids)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_target() -> None:
    assert parse_target("http://127.0.0.1:8000/v1#smollm2") == ("http://127.0.0.1:8000/v1", "smollm2")
    assert parse_target("https://host/v1/") == ("https://host/v1", None)
    assert parse_target("smollm2", base_url="http://h:1/v1") == ("http://h:1/v1", "smollm2")
    assert parse_target("smollm2")[0] in (DEFAULT_BASE_URL, __import__("os").environ.get("OPENAI_BASE_URL"))
    with pytest.raises(ValueError, match="must look like"):
        parse_target("name", base_url="localhost:8000")
    with pytest.raises(ValueError, match="two base URLs"):
        parse_target("http://a:1/v1#m", base_url="http://b:2/v1")


def test_registered_under_openai_and_aliases() -> None:
    assert backend_class("openai") is OpenAIBackend
    assert backend_class("vllm_server") is OpenAIBackend


def test_loads_through_the_spec_and_picks_the_model(fake: FakeServer) -> None:
    model = load_backend(f"openai:{fake.url}#tiny")
    assert model.info.backend == "openai" and model.info.model == "tiny" and model.info.path == fake.url
    assert load_backend(f"openai:{fake.url}").model_name == "tiny"  # no name: the first listed
    assert load_backend("openai:tiny", base_url=fake.url).model_name == "tiny"
    with pytest.raises(ModelError, match="does not serve 'other'; it serves tiny"):
        load_backend(f"openai:{fake.url}#other")
    with pytest.raises(ModelError, match="no adapter 'lora'.*--lora-modules lora=PATH"):
        load_backend(f"openai:{fake.url}", adapter="lora")


def test_connection_refused_is_a_model_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(ModelError, match=r"cannot reach the OpenAI-compatible server at .*vllm serve") as info:
        load_backend(f"openai:{url}#m", timeout=5)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_http_errors_carry_the_server_message(fake: FakeServer) -> None:
    model = load_backend(f"openai:{fake.url}#tiny")
    fake.fail = (400, json.dumps({"error": {"message": "max_tokens is too large", "type": "BadRequestError"}}))
    with pytest.raises(ModelError, match=r"chat/completions answered HTTP 400: max_tokens is too large"):
        model.generate([Message(role="user", content="hi")])
    fake.fail = (500, "Internal Server Error")
    with pytest.raises(ModelError, match="HTTP 500: Internal Server Error"):
        model.score_labels("abc", ["d"])
    fake.fail = (200, "<html>not json</html>")
    with pytest.raises(ModelError, match="not JSON"):
        model.generate([Message(role="user", content="hi")])
    fake.fail = (200, json.dumps({"choices": []}))
    with pytest.raises(ModelError, match="answered no completion"):
        model.generate([Message(role="user", content="hi")])


def test_a_slow_server_times_out(fake: FakeServer) -> None:
    model = load_backend(f"openai:{fake.url}#tiny", timeout=0.3)
    fake.delay = 1.0
    with pytest.raises(ModelError, match=r"did not answer within 0.3 s"):
        model.generate([Message(role="user", content="hi")])


class Rule(BaseModel):
    label: str
    n: int


def test_generate_sends_chat_and_schema(fake: FakeServer) -> None:
    fake.models.append({"id": "lora", "parent": "tiny"})
    model = load_backend(f"openai:{fake.url}#tiny", adapter="lora")
    out = model.generate([Message(role="system", content="be brief"), Message(role="user", content="hi")],
                         max_tokens=7, temperature=0.5, seed=3)
    assert out.text == "hello from lora"  # requests name the adapter
    assert (out.prompt_tokens, out.completion_tokens, out.finish_reason) == (11, 3, "stop")
    path, payload = fake.requests[-1]
    assert path == "/v1/chat/completions"
    assert payload["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (payload["max_tokens"], payload["temperature"], payload["seed"]) == (7, 0.5, 3)
    assert "response_format" not in payload
    out = model.generate([Message(role="user", content="rule?")], schema=Rule)
    assert Rule.model_validate_json(out.text).label == "refund"
    fmt = fake.requests[-1][1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == Rule.model_json_schema()
    assert model.usage.calls == 2 and model.usage.completion_tokens == 6
    with pytest.raises(ModelError, match="text-only"):
        model.generate([Message(role="user", content="look")], images=["x.png"])


def test_score_labels_batches_all_labels_in_one_request(fake: FakeServer) -> None:
    model = load_backend(f"openai:{fake.url}#tiny")
    labels = ["refund", "delivery time", "greeting"]
    scores = model.score_labels("Where is my parcel?", labels)
    prompt_ids = _tokens("^Where is my parcel?")
    assert scores.scores == pytest.approx({label: _expected(prompt_ids, label) for label in labels})
    assert scores.prompt_tokens == len(prompt_ids)
    assert scores.label_tokens == {label: len(label) for label in labels}
    scoring = [p for path, p in fake.requests if path == "/v1/completions"]
    assert len(scoring) == 1 and scoring[0]["prompt"] == [prompt_ids + _tokens(label) for label in labels]
    # A chat prompt goes through the server's template; label tokenizations are cached.
    before = len([1 for path, _ in fake.requests if path == "/tokenize"])
    chat = [Message(role="user", content="hi")]
    scores = model.score_labels(chat, labels)
    assert scores.prompt_tokens == len("<user>hi<assistant>")
    assert len([1 for path, _ in fake.requests if path == "/tokenize"]) == before + 1
    assert scores.best == max(labels, key=lambda label: _expected(_tokens("<user>hi<assistant>"), label))


def test_score_labels_one_request_per_label_on_a_lora_server(fake: FakeServer) -> None:
    fake.models.append({"id": "lora", "parent": "tiny"})
    model = load_backend(f"openai:{fake.url}#tiny")
    labels = ["a", "bc", "def"]
    scores = model.score_labels("xyz", labels)
    scoring = [p for path, p in fake.requests if path == "/v1/completions"]
    assert [len(p["prompt"]) for p in scoring] == [1, 1, 1]
    assert scores.scores == pytest.approx({label: _expected(_tokens("^xyz"), label) for label in labels})
    forced = load_backend(f"openai:{fake.url}#tiny", batch_scoring=True)
    forced.score_labels("xyz", labels)
    assert len(fake.requests[-1][1]["prompt"]) == 3


def test_score_labels_needs_the_tokenize_endpoint(fake: FakeServer) -> None:
    model = load_backend(f"openai:{fake.url}#tiny")
    fake.fail = (404, json.dumps({"detail": "Not Found"}))
    with pytest.raises(ModelError, match=r"needs vLLM's /tokenize endpoint"):
        model.score_labels("abc", ["d"])
