"""Fault injectors that the offline model does not provide.

* :class:`FlakyProvider`: an OpenAI-compatible endpoint that answers HTTP errors *with* a
  ``retry-after-ms`` header (so opencode's own retries of 429/5xx take milliseconds instead of
  ~69 s), cuts streams once or always, and records which opencode session sent each request.
* :class:`CuttableProxy`: a TCP proxy in front of an ``opencode serve``; :meth:`cut` drops chosen
  connections (e.g. only the ``GET /global/event`` stream) while the server stays alive.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opencode_wrapper.config import RunConfig

_STATUS = re.compile(r"\[\[status: (\d{3})\]\]")


@dataclass
class ProviderRequest:
    time: float
    session_id: str | None
    text: str
    title: bool


def _user_texts(messages: list[Any]) -> list[str]:
    out = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return out


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-flaky",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    server: FlakyProvider
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        data = json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]}).encode()
        self._send(200, data, "application/json")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        messages = body.get("messages") or []
        system = json.dumps(messages[:1])
        title = "title generator" in system
        texts = _user_texts(messages)
        text = texts[-1] if texts else ""
        session = self.headers.get("x-session-id")
        self.server.note(ProviderRequest(time.monotonic(), session, text, title))
        if title:
            self._stream("Flaky title")
            return
        joined = "\n".join(texts)
        status = _STATUS.search(joined)
        if status:
            code = int(status.group(1))
            data = json.dumps(
                {"error": {"message": f"flaky provider: HTTP {code}", "type": "x", "code": "x"}}
            )
            headers = {} if "[[slow-retry]]" in joined else {"retry-after-ms": "10"}
            self._send(code, data.encode(), "application/json", headers)
            return
        answer = "complete answer from the flaky provider"
        if "[[cut-always]]" in joined or ("[[cut-once]]" in joined and self.server.first_for(session)):
            self._stream(answer, cut=True)
            return
        self._stream(answer)

    def _send(self, code: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        # Said outright (HTTP/1.0 closes anyway): a client must not try to reuse the connection.
        self.send_header("connection", "close")
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, text: str, cut: bool = False) -> None:
        self.send_response(200)
        self.send_header("connection", "close")
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        self.wfile.write(_chunk({"role": "assistant", "content": ""}))
        half = len(text) // 2
        self.wfile.write(_chunk({"content": text[:half]}))
        self.wfile.flush()
        if cut:
            return  # HTTP/1.0: returning closes the connection: no finish, no usage, no [DONE]
        self.wfile.write(_chunk({"content": text[half:]}))
        self.wfile.write(_chunk({}, finish="stop"))
        self.wfile.write(_chunk({}, usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}))
        self.wfile.write(b"data: [DONE]\n\n")


class FlakyProvider(ThreadingHTTPServer):
    """Prompt directives: ``[[status: 429]]`` (error with ``retry-after-ms: 10``; add
    ``[[slow-retry]]`` for no header: opencode's ~69 s schedule), ``[[cut-once]]`` (the first
    request of a session is cut mid-answer), ``[[cut-always]]``; anything else is answered with
    ``complete answer from the flaky provider``."""

    daemon_threads = True
    # The default backlog of 5 overflows while opencode re-requests a cut stream in a busy loop
    # next to the other cases: the kernel then resets new connections, a fault nobody injected.
    request_queue_size = 256

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[ProviderRequest] = []
        self._seen: set[str | None] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="flaky-provider", daemon=True)

    def note(self, request: ProviderRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def first_for(self, session: str | None) -> bool:
        with self._lock:
            first = session not in self._seen
            self._seen.add(session)
            return first

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def chats(self, needle: str) -> list[ProviderRequest]:
        with self._lock:
            return [r for r in self.requests if not r.title and needle in r.text]

    def run_config(self, **fields: Any) -> RunConfig:
        return provider_run_config(self.url, **fields)

    def __enter__(self) -> FlakyProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


def provider_run_config(base_url: str, **fields: Any) -> RunConfig:
    """The offline provider config pointed at ``base_url`` (any OpenAI-compatible endpoint)."""
    from opencode_wrapper.testing._config import run_config

    return run_config(base_url, **fields)


def closed_port() -> int:
    """A local port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- proxy


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.first = b""
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class CuttableProxy:
    """A thread-per-direction TCP proxy to ``host:port`` on a free local port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                if self._closed:
                    pair.close()
                    return
                self._pairs.append(pair)
            self._spawn(self._pump, pair, client, upstream, True)
            self._spawn(self._pump, pair, upstream, client, False)

    @staticmethod
    def _pump(pair: _Pair, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if outbound and len(pair.first) < 256:
                    pair.first += data[:256]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            pair.close()

    def cut(self, request_prefix: bytes = b"GET /global/event") -> int:
        """Drop every open connection whose request starts with ``request_prefix``; return how many."""
        with self._lock:
            chosen = [p for p in self._pairs if not p.closed and p.first.startswith(request_prefix)]
        for pair in chosen:
            pair.close()
        return len(chosen)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.close()
        for thread in self._threads:
            thread.join(5)
