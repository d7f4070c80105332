"""The HTTP side of the offline model: a ``ThreadingHTTPServer`` and its request handler.

The handler parses and records each request, asks its owner (an ``OfflineModelServer``, seen here
through :class:`ModelOwner`) what to answer, and writes the answer in the OpenAI wire format.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from opencode_wrapper.testing._replies import (
    AnyReply,
    Completion,
    ComputedReply,
    ErrorReply,
    HangReply,
    as_reply,
)
from opencode_wrapper.testing._request import RecordedRequest
from opencode_wrapper.testing._wire import WireContext, completion_json, stream_frames

#: A computed reply may return another computed reply; this bounds the chain.
_MAX_COMPUTE_DEPTH = 10
#: ``GET`` this path (outside ``/v1``) for the JSON report ``OfflineModelProcess.assert_complete`` reads.
REPORT_PATH = "/_offline/report"


class ModelOwner(Protocol):
    """What the handler needs from the server that owns it."""

    model_name: str
    chunk_size: int

    def _record(
        self, method: str, path: str, headers: dict[str, str], body: Any, raw: bytes
    ) -> RecordedRequest: ...

    def _record_error(self, error: BaseException) -> None: ...

    def _choose(self, request: RecordedRequest) -> AnyReply: ...

    def _models_fault(self, request: RecordedRequest) -> AnyReply | None: ...

    def report(self) -> dict[str, Any]: ...


class HTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that can drop every open connection, so that ``stop()`` is prompt."""

    daemon_threads = True
    # The socketserver default (5) is too small for many opencode sessions starting at once.
    request_queue_size = 128

    def __init__(self, owner: ModelOwner, port: int) -> None:
        self.owner = owner
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut down every open connection: blocked reads return EOF, blocked writes fail."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-stream (or stop() dropping it) is normal here, not worth a traceback.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: HTTPServer
    # HTTP/1.0: every response ends by closing the connection, so a stream needs no chunked encoding
    # and a cut stream is just a close.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == REPORT_PATH:  # the test's own question, not opencode traffic
            with contextlib.suppress(OSError):
                self._send_json(200, self.server.owner.report())
            return
        request = self._record(b"")
        if not request.path.rstrip("/").endswith("/models"):
            self._send_json(404, ErrorReply(404, f"no route for GET {request.path}").body())
            return
        try:
            fault = self.server.owner._models_fault(request)
        except Exception as exc:  # a user matcher failed: tell the client, keep it
            self.server.owner._record_error(exc)
            fault = ErrorReply(500, f"offline model: a fault matcher raised {exc!r}")
        if fault is not None:
            # Faults on this route are errors, hangs or cuts; a cut closes without an answer.
            self._deliver(resolve(fault, request), request, send_completion=False)
            return
        model = self.server.owner.model_name
        self._send_json(
            200,
            {
                "object": "list",
                "data": [{"id": model, "object": "model", "created": 0, "owned_by": "offline"}],
            },
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = self._record(self.rfile.read(length) if length > 0 else b"")
        if not request.is_chat:
            self._send_json(404, ErrorReply(404, f"no route for POST {request.path}").body())
            return
        if not isinstance(request.body, dict):
            self._send_json(400, ErrorReply(400, "request body is not a JSON object").body())
            return
        self._answer(request)

    def _record(self, raw: bytes) -> RecordedRequest:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        return self.server.owner._record(self.command, self.path, headers, body, raw)

    def _answer(self, request: RecordedRequest) -> None:
        try:
            reply = resolve(self.server.owner._choose(request), request)
        except Exception as exc:  # a user matcher or reply callable failed: tell the client, keep it
            self.server.owner._record_error(exc)
            reply = ErrorReply(500, f"offline model: a rule or reply callable raised {exc!r}")
        self._deliver(reply, request)

    def _deliver(
        self,
        reply: Completion | ErrorReply | HangReply,
        request: RecordedRequest,
        *,
        send_completion: bool = True,
    ) -> None:
        stopping = self.server.stopping
        if isinstance(reply, HangReply):
            stopping.wait()
            return
        if reply.delay > 0 and stopping.wait(reply.delay):
            return
        try:
            if isinstance(reply, ErrorReply):
                self._send_json(reply.status, reply.body())
            elif not send_completion:
                return
            elif request.stream:
                self._stream(reply, request)
            else:
                self._send_whole(reply, request)
        except OSError:
            pass  # the client went away, or stop() dropped the connection

    def _context(self, request: RecordedRequest) -> WireContext:
        owner = self.server.owner
        return WireContext(
            completion_id=f"chatcmpl-offline-{request.index}",
            created=int(request.time),
            model=request.model or owner.model_name,
            chunk_size=owner.chunk_size,
            call_id_prefix=f"call_{request.index}_",
        )

    def _stream(self, reply: Completion, request: RecordedRequest) -> None:
        frames = stream_frames(reply, self._context(request))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for frame in frames.head:
            self.wfile.write(frame)
        for n, frame in enumerate(frames.content):
            if reply.cut_after is not None and n >= reply.cut_after:
                return
            if n and reply.chunk_delay > 0 and self.server.stopping.wait(reply.chunk_delay):
                return
            self.wfile.write(frame)
        if reply.cut_after is not None:
            return  # cut at or after the last content chunk: still no finish, usage or [DONE]
        for frame in frames.tail:
            self.wfile.write(frame)

    def _send_whole(self, reply: Completion, request: RecordedRequest) -> None:
        data = json.dumps(completion_json(reply, self._context(request)), ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        # A cut non-streamed answer: half the promised body, then the connection closes.
        self.wfile.write(data if reply.cut_after is None else data[: len(data) // 2])

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def resolve(reply: AnyReply, request: RecordedRequest) -> Completion | ErrorReply | HangReply:
    for _ in range(_MAX_COMPUTE_DEPTH):
        if not isinstance(reply, ComputedReply):
            return reply
        reply = as_reply(reply.fn(request))
    raise RecursionError(f"a computed reply returned computed replies {_MAX_COMPUTE_DEPTH} times in a row")
