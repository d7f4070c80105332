"""``OfflineModelServer``: the scripted OpenAI-compatible HTTP server, run on a background thread."""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opencode_wrapper.testing._config import MODEL_ID, provider_config, run_config
from opencode_wrapper.testing._replies import (
    AnyReply,
    Completion,
    ComputedReply,
    ErrorReply,
    HangReply,
    ReplyLike,
    as_reply,
    reply_from_json,
)
from opencode_wrapper.testing._request import RecordedRequest
from opencode_wrapper.testing._rules import (
    BUILTIN_RULES,
    ECHO,
    MatchLike,
    Rule,
    RuleLike,
    as_rule,
    rules_from_json,
)
from opencode_wrapper.testing._wire import WireContext, completion_json, stream_frames

if TYPE_CHECKING:
    from opencode_wrapper.config import RunConfig

#: The title answered to opencode's title-generation requests by default.
DEFAULT_TITLE = "Offline session"
#: Characters per streamed text chunk unless a reply says otherwise.
DEFAULT_CHUNK_SIZE = 16
#: A computed reply may return another computed reply; this bounds the chain.
_MAX_COMPUTE_DEPTH = 10


class _HTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that can drop every open connection, so that ``stop()`` is prompt."""

    daemon_threads = True
    # The socketserver default (5) is too small for many opencode sessions starting at once.
    request_queue_size = 128

    def __init__(self, owner: OfflineModelServer, port: int) -> None:
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
    server: _HTTPServer
    # HTTP/1.0: every response ends by closing the connection, so a stream needs no chunked encoding
    # and a cut stream is just a close.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        request = self._record(b"")
        if request.path.rstrip("/").endswith("/models"):
            model = self.server.owner.model_name
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": model, "object": "model", "created": 0, "owned_by": "offline"}],
                },
            )
        else:
            self._send_json(404, ErrorReply(404, f"no route for GET {request.path}").body())

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
        stopping = self.server.stopping
        try:
            reply = _resolve(self.server.owner._choose(request), request)
        except Exception as exc:  # a user matcher or reply callable failed: tell the client, keep it
            self.server.owner._record_error(exc)
            reply = ErrorReply(500, f"offline model: a rule or reply callable raised {exc!r}")
        if isinstance(reply, HangReply):
            stopping.wait()
            return
        if reply.delay > 0 and stopping.wait(reply.delay):
            return
        try:
            if isinstance(reply, ErrorReply):
                self._send_json(reply.status, reply.body())
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


def _resolve(reply: AnyReply, request: RecordedRequest) -> Completion | ErrorReply | HangReply:
    for _ in range(_MAX_COMPUTE_DEPTH):
        if not isinstance(reply, ComputedReply):
            return reply
        reply = as_reply(reply.fn(request))
    raise RecursionError(f"a computed reply returned computed replies {_MAX_COMPUTE_DEPTH} times in a row")


class OfflineModelServer:
    """An offline, scripted, OpenAI-compatible chat-completions server for opencode.

    Each chat request is answered by the first of:

    1. title auto-answer: a title-generation request gets ``title`` (unless ``title=None``) and
       consumes nothing;
    2. the script: the next reply of ``script`` (each is used once);
    3. ``rules``: the first rule whose matcher accepts the request;
    4. the built-in rules (unless ``builtin_rules=False``): tool results are quoted, prompt
       directives like ``[[bash: ls]]`` are obeyed, "What is my name?" is answered from history;
    5. ``default``: ``"You said: <last user text>"`` unless given.

    Example::

        with OfflineModelServer(script=[Reply.bash("ls"), "Listed."]) as model:
            config = model.run_config()            # a RunConfig pointing opencode here
            ...
            assert model.chat_requests[1].tool_results[0].name == "bash"

    Args:
        script: replies used one per request, in order (a ``str`` is a text reply).
        rules: :class:`Rule` objects or ``(match, reply)`` tuples; a ``str`` match is a regex on
            the last user text.
        default: the reply when nothing else matched.
        title: the answer to title-generation requests; ``None`` routes them like any request.
        builtin_rules: whether the built-in directive/tool-result/remember rules apply.
        chunk_size: characters per streamed text chunk for replies that set none.
        port: TCP port on 127.0.0.1; 0 picks a free one (read it from :attr:`port`/:attr:`url`).
        model_name: the model id reported by ``GET /v1/models``.
    """

    def __init__(
        self,
        script: Iterable[ReplyLike] = (),
        rules: Iterable[RuleLike] = (),
        *,
        default: ReplyLike | None = None,
        title: str | None = DEFAULT_TITLE,
        builtin_rules: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        port: int = 0,
        model_name: str = MODEL_ID,
    ) -> None:
        self.title = title
        self.builtin_rules = builtin_rules
        self.chunk_size = chunk_size
        self.model_name = model_name
        self.default: AnyReply = ECHO if default is None else as_reply(default)
        self._requested_port = port
        self._lock = threading.Condition()
        self._script: collections.deque[AnyReply] = collections.deque(as_reply(r) for r in script)
        self._rules: list[Rule] = [as_rule(r) for r in rules]
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_json(cls, data: Any, *, port: int = 0) -> OfflineModelServer:
        """A server from the JSON form of a rules file.

        ``data`` is a list of rules (see :func:`rules_from_json`), or an object with any of
        ``"rules"`` (that list), ``"script"`` (a list of replies), ``"default"`` (a reply),
        ``"title"`` (a string or ``null``), ``"builtin_rules"`` (bool) and ``"chunk_size"`` (int).
        """
        if isinstance(data, list):
            data = {"rules": data}
        if not isinstance(data, dict):
            raise ValueError(f"a rules file holds a JSON list or object, got {type(data).__name__}")
        known = {"rules", "script", "default", "title", "builtin_rules", "chunk_size"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown keys {sorted(unknown)} in rules file; expected some of {sorted(known)}"
            )
        script = data.get("script") or []
        if not isinstance(script, list):
            raise ValueError(f"'script' must be a list of replies, got {script!r}")
        return cls(
            script=[reply_from_json(item) for item in script],
            rules=rules_from_json(data.get("rules") or []),
            default=reply_from_json(data["default"]) if data.get("default") is not None else None,
            title=data.get("title", DEFAULT_TITLE),
            builtin_rules=bool(data.get("builtin_rules", True)),
            chunk_size=int(data.get("chunk_size", DEFAULT_CHUNK_SIZE)),
            port=port,
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> OfflineModelServer:
        """Bind 127.0.0.1 and serve on a daemon thread; returns ``self``. No-op if running."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer(self, self._requested_port)
        # A short poll interval: shutdown() waits for the serve loop to notice it.
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="offline-model", daemon=True
        )
        thread.start()
        self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection (hung and slow replies included).

        Returns promptly (well under a second); safe to call twice.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        httpd.stopping.set()  # wakes hung, delayed and slow replies
        httpd.shutdown()
        httpd.server_close()
        httpd.drop_connections()
        thread.join(timeout=1.0)

    @property
    def running(self) -> bool:
        """Whether the server is started."""
        return self._httpd is not None

    def __enter__(self) -> OfflineModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> OfflineModelServer:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio  # only here: importing asyncio costs more than the rest of this module

        await asyncio.to_thread(self.stop)

    # --- addresses and configuration --------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._httpd is None:
            raise RuntimeError(
                "the offline model is not running; call start() or use it as a context manager"
            )
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def provider_config(self) -> dict[str, Any]:
        """The opencode config fragment declaring this server as provider ``offline``, model ``scripted``."""
        return provider_config(self.url)

    def run_config(self, **fields: Any) -> RunConfig:
        """A ``RunConfig`` with ``model="offline/scripted"`` and the provider config in
        ``config_overrides`` (plus ``share: disabled`` and any ``config_overrides`` you pass);
        other keywords go to ``RunConfig``."""
        return run_config(self.url, **fields)

    # --- steering -----------------------------------------------------------------------------------

    def enqueue(self, *replies: ReplyLike) -> None:
        """Append replies to the script."""
        converted = [as_reply(r) for r in replies]
        with self._lock:
            self._script.extend(converted)

    def add_rule(self, match: MatchLike, reply: ReplyLike) -> Rule:
        """Append a rule (after the existing ones) and return it."""
        rule = Rule(match, reply)
        with self._lock:
            self._rules.append(rule)
        return rule

    @property
    def script_remaining(self) -> int:
        """How many scripted replies are not used yet."""
        with self._lock:
            return len(self._script)

    def _choose(self, request: RecordedRequest) -> AnyReply:
        if self.title is not None and request.is_title_request:
            return Completion(text=self.title)
        with self._lock:
            if self._script:
                return self._script.popleft()
            rules = list(self._rules)
        if self.builtin_rules:
            rules += BUILTIN_RULES
        # Matchers are user code: run them outside the lock.
        for rule in rules:
            if rule.matches(request):
                return rule.reply
        return self.default

    # --- records --------------------------------------------------------------------------------

    def _record(
        self, method: str, path: str, headers: dict[str, str], body: Any, raw: bytes
    ) -> RecordedRequest:
        with self._lock:
            request = RecordedRequest(len(self._requests), method, path, headers, body, raw, time.time())
            self._requests.append(request)
            self._lock.notify_all()
        return request

    def _record_error(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completion requests, without title-generation requests."""
        return [r for r in self.requests if r.is_chat and not r.is_title_request]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by matchers and reply callables (each request was answered with HTTP 500)."""
        with self._lock:
            return list(self._errors)

    def clear(self) -> None:
        """Forget the recorded requests and errors (the script and rules are kept)."""
        with self._lock:
            self._requests.clear()
            self._errors.clear()

    def wait_for_chat_requests(self, count: int = 1, *, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``count`` :attr:`chat_requests` arrived; return them.

        Raises:
            TimeoutError: not enough arrived within ``timeout`` seconds.
        """

        def enough() -> bool:
            return sum(1 for r in self._requests if r.is_chat and not r.is_title_request) >= count

        with self._lock:
            if not self._lock.wait_for(enough, timeout):
                raise TimeoutError(f"expected {count} chat request(s) within {timeout} s")
        return self.chat_requests
