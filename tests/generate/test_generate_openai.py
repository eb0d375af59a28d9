"""The openai generator against a tiny scripted HTTP server on 127.0.0.1: retries, backoff,
timeouts, concurrency, errors, the API key and the cache. The real-server tests (llama.cpp) are
in test_probes_integration.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from swiftstudy.data import Message
from swiftstudy.errors import InputError
from swiftstudy.generate import (
    CachedGenerator,
    GenerationCache,
    GenerationError,
    OpenAIChatGenerator,
    OpenAISettings,
    openai_chat,
)

SECRET = "sk-test-do-not-leak-4f1c"


def completion(content: str) -> dict:
    """A minimal chat.completion body."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "stub-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def echo_answer(body: dict) -> str:
    return "answer: " + body["messages"][-1]["content"]


class StubServer:
    """An OpenAI-compatible stub: ``script`` decides each chat request's reply.

    ``script(n, body)`` gets the 0-based number of the chat request and its JSON body, and
    returns ``(status, json_body, headers, delay_s)``; the default answers 200 with an echo.
    """

    def __init__(self, script: Callable | None = None, models=("stub-model",)) -> None:
        self.script = script or (lambda n, body: (200, completion(echo_answer(body)), {}, 0))
        self.models = models
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: dict, headers: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stub.requests.append({"path": self.path, "headers": _lower(self.headers)})
                data = [{"id": m, "object": "model", "owned_by": "me"} for m in stub.models]
                self._send(200, {"object": "list", "data": data}, {})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    number = len(stub.chat_requests)
                    stub.requests.append(
                        {"path": self.path, "headers": _lower(self.headers), "body": body}
                    )
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    status, reply, headers, delay = stub.script(number, body)
                    time.sleep(delay)
                    # The client may have timed out and gone away.
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self._send(status, reply, headers)
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

        return Handler


def _lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _generator(server: StubServer, **overrides) -> OpenAIChatGenerator:
    settings = {"model": "stub-model", "base_url": server.base_url, "backoff_s": 0.01}
    settings.update(overrides)
    return OpenAIChatGenerator(OpenAISettings(**settings))


PROMPTS = [[Message("user", f"question {i}")] for i in range(6)]


def test_answers_come_back_in_prompt_order_with_the_request_settings():
    with StubServer() as server:
        generator = _generator(server, temperature=0.5, max_new_tokens=33, seed=7)
        answers = generator.generate(PROMPTS)
    assert answers == [f"answer: question {i}" for i in range(6)]
    body = server.chat_requests[0]["body"]
    assert body["model"] == "stub-model" and body["max_tokens"] == 33
    assert body["temperature"] == 0.5 and body["seed"] == 7
    assert body["messages"][-1]["role"] == "user"


def test_429_then_200_is_retried_after_retry_after(caplog):
    def script(n, body):
        if n == 0:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0.05"}, 0
        return 200, completion("ok"), {}, 0

    with StubServer(script) as server, caplog.at_level(logging.WARNING):
        generator = _generator(server, backoff_s=30.0)  # Retry-After wins over our schedule
        start = time.monotonic()
        assert generator.generate(PROMPTS[:1]) == ["ok"]
        elapsed = time.monotonic() - start
    assert len(server.chat_requests) == 2 and generator.requests == 2
    assert 0.05 <= elapsed < 5
    assert "HTTP 429" in caplog.text and "retrying in 0.1 s" in caplog.text


def test_5xx_backoff_doubles_and_gives_up_after_max_retries(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(openai_chat, "time", SimpleNamespace(sleep=waits.append))

    def script(n, body):
        return 503, {"error": {"message": "overloaded"}}, {}, 0

    with StubServer(script) as server:
        generator = _generator(server, max_retries=3, backoff_s=1.0, max_backoff_s=3.0)
        with pytest.raises(GenerationError, match=r"HTTP 503.*gave up after 3 retries"):
            generator.generate(PROMPTS[:1])
    assert len(server.chat_requests) == 4
    # Jittered doubling, capped: [0.5, 1], [1, 2], [1.5, 3].
    assert len(waits) == 3
    for wait, (low, high) in zip(waits, [(0.5, 1), (1, 2), (1.5, 3)], strict=True):
        assert low <= wait <= high


def test_a_timed_out_request_is_retried():
    def script(n, body):
        return 200, completion(f"try {n}"), {}, 1.0 if n == 0 else 0

    with StubServer(script) as server:
        generator = _generator(server, timeout_s=0.3)
        assert generator.generate(PROMPTS[:1]) == ["try 1"]


def test_other_4xx_fail_at_once():
    def script(n, body):
        return 400, {"error": {"message": "prompt too long"}}, {}, 0

    with (
        StubServer(script) as server,
        pytest.raises(GenerationError, match=r"HTTP 400: .*prompt too long"),
    ):
        _generator(server).generate(PROMPTS[:1])
    assert len(server.chat_requests) == 1


def test_refused_key_is_bad_input_naming_the_variable_not_the_key(monkeypatch):
    monkeypatch.setenv("MY_KEY", SECRET)

    def script(n, body):
        return 401, {"error": {"message": "invalid api key"}}, {}, 0

    with (
        StubServer(script) as server,
        pytest.raises(InputError, match=r"refused the API key.*\$MY_KEY") as caught,
    ):
        _generator(server, api_key_env="MY_KEY").generate(PROMPTS[:1])
    assert SECRET not in str(caught.value)


def test_unknown_model_is_bad_input():
    def script(n, body):
        return 404, {"error": {"message": "model not found"}}, {}, 0

    with (
        StubServer(script) as server,
        pytest.raises(InputError, match=r"model: .*not found for model 'stub-model'"),
    ):
        _generator(server).generate(PROMPTS[:1])


def test_concurrency_limits_requests_in_flight():
    def script(n, body):
        return 200, completion(echo_answer(body)), {}, 0.2

    with StubServer(script) as server:
        answers = _generator(server, concurrency=3).generate(PROMPTS)
    assert answers == [f"answer: question {i}" for i in range(6)]
    assert server.max_in_flight == 3


def test_the_key_is_sent_but_never_cached_logged_or_in_settings(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with StubServer() as server, caplog.at_level(logging.DEBUG):
        generator = _generator(server)
        CachedGenerator(generator, GenerationCache(tmp_path)).generate(PROMPTS[:2])
    assert server.chat_requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in json.dumps(generator.settings)
    assert SECRET not in caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text()


def test_the_model_defaults_to_the_servers_only_model():
    with StubServer() as server:
        generator = _generator(server, model=None)
        assert generator.generate(PROMPTS[:1]) == ["answer: question 0"]
        assert generator.settings["model"] == "stub-model"
    assert server.requests[0]["path"] == "/v1/models"
    with (
        StubServer(models=("a", "b")) as server,
        pytest.raises(InputError, match=r"model: .* serves 2 models \(a, b\): choose one"),
    ):
        _generator(server, model=None).generate(PROMPTS[:1])


def test_cached_answers_make_no_requests(tmp_path):
    cache = GenerationCache(tmp_path)
    with StubServer() as server:
        first = CachedGenerator(_generator(server), cache).generate(PROMPTS)
        count = len(server.requests)
        again = CachedGenerator(_generator(server), cache)
        assert again.generate(PROMPTS) == first
        assert len(server.requests) == count
        assert (again.hits, again.misses) == (6, 0)


def test_a_failure_stops_the_run_and_earlier_answers_stay_cached(tmp_path):
    def script(n, body):
        if body["messages"][-1]["content"] == "question 3":
            return 400, {"error": {"message": "no"}}, {}, 0
        return 200, completion(echo_answer(body)), {}, 0

    cache = GenerationCache(tmp_path)
    with StubServer(script) as server, pytest.raises(GenerationError):
        CachedGenerator(_generator(server, concurrency=1), cache).generate(PROMPTS)
        assert len(server.chat_requests) == 4  # stopped at the failure, nothing more was sent
    assert len(list(tmp_path.rglob("*.json"))) == 3


def test_unreachable_server_gives_up_with_its_address(monkeypatch):
    monkeypatch.setattr(openai_chat, "time", SimpleNamespace(sleep=lambda s: None))
    with StubServer() as server:
        url = server.base_url
    generator = OpenAIChatGenerator(OpenAISettings(model="m", base_url=url, max_retries=1))
    with pytest.raises(GenerationError, match=r"127\.0\.0\.1.*APIConnectionError"):
        generator.generate(PROMPTS[:1])
