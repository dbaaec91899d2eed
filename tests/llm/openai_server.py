"""A scripted OpenAI-compatible HTTP server for testing model clients over real sockets.

It listens on 127.0.0.1 (a free port) in a background thread and answers
``POST /v1/chat/completions`` from a queue of behaviours, one per request, in order: a normal
reply, a tool call, a status error with headers, a slow reply, a malformed body. Every request is
recorded (headers, JSON body, arrival time) so tests can assert on what the client sent.

::

    server = OpenAIServer()
    server.start()
    server.reply("hello")
    server.fail(429, headers={"Retry-After": "0.2"})
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Behaviour", "OpenAIServer", "RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it. Header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or the raw text when it was not JSON
    received_at: float  # time.monotonic()


@dataclass(frozen=True)
class Behaviour:
    """How to answer one request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0  # seconds to wait before answering


def completion(
    *,
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    refusal: str | None = None,
    model: str = "test-model",
    finish_reason: str = "stop",
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
) -> dict[str, Any]:
    """A chat-completion body as OpenAI sends it."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class OpenAIServer:
    """The scripted server. Unscripted requests get a 418 so a test sees them fail loudly."""

    def __init__(self) -> None:
        self._script: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL to give a client: ``http://127.0.0.1:<port>/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """How many scripted behaviours are still unused."""
        with self._lock:
            return len(self._script)

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` requests have arrived (polls: the server runs in a thread)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} of {count} requests within {timeout}s")
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a slow reply
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- scripting ------------------------------------------------------------------------

    def add(self, behaviour: Behaviour) -> None:
        with self._lock:
            self._script.append(behaviour)

    def reply(self, content: str | None = "Hello!", *, delay: float = 0.0, **fields: Any) -> None:
        """A normal reply; ``fields`` go to :func:`completion` (usage, model, refusal...)."""
        body = completion(content=content, **fields)
        self.add(Behaviour(body=json.dumps(body).encode(), delay=delay))

    def reply_json(self, value: Any) -> None:
        """A structured-output reply: ``value`` as the JSON content."""
        self.reply(json.dumps(value))

    def reply_tool_call(
        self, name: str, arguments: dict[str, Any] | str, *, call_id: str = "call_1"
    ) -> None:
        """A reply calling one tool; ``arguments`` as a dict, or raw text to send malformed."""
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}
        self.reply(None, tool_calls=[call], finish_reason="tool_calls")

    def fail(
        self,
        status: int,
        message: str = "scripted failure",
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """An error status with an OpenAI-style error body."""
        body = {"error": {"message": message, "type": "test_error", "code": None}}
        self.add(Behaviour(status=status, body=json.dumps(body).encode(), headers=headers or {}))

    def slow(self, delay: float) -> None:
        """A reply that arrives only after ``delay`` seconds."""
        self.reply("too late", delay=delay)

    def raw(
        self, body: bytes, *, status: int = 200, content_type: str = "application/json"
    ) -> None:
        """Exactly these bytes, e.g. a malformed body."""
        self.add(Behaviour(status=status, body=body, content_type=content_type))

    # -- used by the handler --------------------------------------------------------------

    def _next(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            self._requests.append(request)
            if self._script:
                return self._script.popleft()
        body = {"error": {"message": "no scripted behaviour left for this request"}}
        return Behaviour(status=418, body=json.dumps(body).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: OpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up on a slow reply is part of the script, not an error to print.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        recorded = RecordedRequest(
            method="POST",
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            received_at=time.monotonic(),
        )
        if self.path != "/v1/chat/completions":
            behaviour = Behaviour(status=404, body=b'{"error": {"message": "unknown path"}}')
            with owner._lock:
                owner._requests.append(recorded)
        else:
            behaviour = owner._next(recorded)
        if behaviour.delay and owner._stopping.wait(behaviour.delay):
            return
        try:
            self.send_response(behaviour.status)
            self.send_header("Content-Type", behaviour.content_type)
            self.send_header("Content-Length", str(len(behaviour.body)))
            for name, value in behaviour.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(behaviour.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before the reply
