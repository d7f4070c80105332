"""``OfflineModelServer``: the scripted OpenAI-compatible HTTP server, run on a background thread."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.testing._assertions import (
    describe_reply,
    describe_request,
    raise_for_report,
    strict_error,
)
from opencode_wrapper.testing._config import MODEL_ID, provider_config, run_config
from opencode_wrapper.testing._faults import (
    Fault,
    FaultRoute,
    check_error_status,
    faults_from_json,
    route_of,
)
from opencode_wrapper.testing._handler import HTTPServer
from opencode_wrapper.testing._replies import (
    AnyReply,
    Completion,
    ErrorReply,
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

if TYPE_CHECKING:
    from opencode_wrapper.config import RunConfig

#: The title answered to opencode's title-generation requests by default.
DEFAULT_TITLE = "Offline session"
#: Characters per streamed text chunk unless a reply says otherwise.
DEFAULT_CHUNK_SIZE = 16


class OfflineModelServer:
    """An offline, scripted, OpenAI-compatible chat-completions server for opencode.

    Each chat request is answered by the first of:

    0. an injected fault (:meth:`fail`, :meth:`inject`) for the request's route that is not used up;
    1. title auto-answer: a title-generation request gets ``title`` (unless ``title=None``) and
       consumes nothing;
    2. the script: the next reply of ``script`` (each is used once);
    3. ``rules``: the first rule whose matcher accepts the request;
    4. the built-in rules (unless ``builtin_rules=False``): tool results are quoted, prompt
       directives like ``[[bash: ls]]`` are obeyed, "What is my name?" is answered from history;
    5. ``default``: ``"You said: <last user text>"`` unless given; when ``strict``, an HTTP 400
       instead (see below).

    Strict mode (``strict=True``): a chat request that reaches step 5 is *unexpected*. It is
    answered with HTTP :data:`STRICT_STATUS` (400, which opencode does not retry, so the run or
    turn fails within a second rather than after opencode's ~70 s retry schedule for 5xx/429),
    recorded in :attr:`unexpected_requests`, and :meth:`check`/:meth:`assert_complete` raise
    :class:`UnexpectedModelCall` naming it. Title-generation requests are opencode's own, not the
    test's traffic: they are never unexpected (answered with ``title``, or, with ``title=None``
    and nothing matching, with the echo). The built-in rules still count as answers; pass
    ``builtin_rules=False`` too when every model call must come from your script or rules.

    Example::

        with OfflineModelServer(script=[Reply.bash("ls"), "Listed."], strict=True) as model:
            config = model.run_config()            # a RunConfig pointing opencode here
            ...
            assert model.chat_requests[1].tool_results[0].name == "bash"
            model.assert_complete()                # both entries used, nothing unexpected

    Args:
        script: replies used one per request, in order (a ``str`` is a text reply).
        rules: :class:`Rule` objects or ``(match, reply)`` tuples; a ``str`` match is a regex on
            the last user text.
        default: the reply when nothing else matched (not allowed with ``strict``).
        title: the answer to title-generation requests; ``None`` routes them like any request.
        builtin_rules: whether the built-in directive/tool-result/remember rules apply.
        chunk_size: characters per streamed text chunk for replies that set none.
        port: TCP port on 127.0.0.1; 0 picks a free one (read it from :attr:`port`/:attr:`url`).
        model_name: the model id reported by ``GET /v1/models``.
        strict: fail unexpected chat requests (see above) instead of echoing them.
        faults: :class:`Fault` objects to start with (see :meth:`inject`).

    Raises:
        OpenCodeConfigError: ``strict`` is not a bool, or ``strict`` with a ``default``.
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
        strict: bool = False,
        faults: Iterable[Fault] = (),
    ) -> None:
        if not isinstance(strict, bool):
            raise OpenCodeConfigError(f"strict must be True or False, got {strict!r}")
        if strict and default is not None:
            raise OpenCodeConfigError(
                "strict=True fails requests that nothing answers, so it takes no default reply; "
                f"got default={default!r} (add it as a rule instead, e.g. rules=[(Match.always(), reply)])"
            )
        self.title = title
        self.builtin_rules = builtin_rules
        self.chunk_size = chunk_size
        self.model_name = model_name
        self.strict = strict
        self.default: AnyReply = ECHO if default is None else as_reply(default)
        self._requested_port = port
        self._lock = threading.Condition()
        self._script: collections.deque[AnyReply] = collections.deque(as_reply(r) for r in script)
        self._script_used = 0
        self._rules: list[Rule] = [as_rule(r) for r in rules]
        self._faults: list[Fault] = [_check_fault(f) for f in faults]
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._unexpected: list[RecordedRequest] = []
        self._faulted: list[RecordedRequest] = []
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_json(cls, data: Any, *, port: int = 0) -> OfflineModelServer:
        """A server from the JSON form of a rules file.

        ``data`` is a list of rules (see :func:`rules_from_json`), or an object with any of
        ``"rules"`` (that list), ``"script"`` (a list of replies), ``"default"`` (a reply),
        ``"title"`` (a string or ``null``), ``"builtin_rules"`` (bool), ``"chunk_size"`` (int),
        ``"strict"`` (bool) and ``"faults"`` (a list, see :func:`fault_from_json`).
        """
        if isinstance(data, list):
            data = {"rules": data}
        if not isinstance(data, dict):
            raise ValueError(f"a rules file holds a JSON list or object, got {type(data).__name__}")
        known = {"rules", "script", "default", "title", "builtin_rules", "chunk_size", "strict", "faults"}
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
            strict=data.get("strict", False),
            faults=faults_from_json(data.get("faults") or []),
        )

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> OfflineModelServer:
        """Bind 127.0.0.1 and serve on a daemon thread; returns ``self``. No-op if running."""
        if self._httpd is not None:
            return self
        httpd = HTTPServer(self, self._requested_port)
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

    def fail(
        self,
        status: int = 500,
        *,
        times: int | None = 1,
        route: FaultRoute = "chat",
        message: str | None = None,
        match: MatchLike | None = None,
    ) -> Fault:
        """Answer the next ``times`` requests on ``route`` with HTTP ``status``, then normally again.

        ``model.fail(500)`` makes the next chat request (title requests aside) get a 500, which
        opencode retries (after ~2.5 s), and the retry gets the answer the script or rules give.
        ``route="models"`` targets ``GET /v1/models``, ``route="title"`` the title requests.

        Returns:
            the :class:`Fault`; its :attr:`~Fault.served` lists the requests it answered.

        Raises:
            OpenCodeConfigError: ``status`` is not in 400..599, or a bad ``times``/``route``.
        """
        reply = ErrorReply(check_error_status(status), message)
        return self.inject(reply, times=times, route=route, match=match)

    def inject(
        self,
        reply: ReplyLike,
        *,
        times: int | None = 1,
        route: FaultRoute = "chat",
        match: MatchLike | None = None,
    ) -> Fault:
        """Answer the next ``times`` requests on ``route`` with ``reply`` (any reply), then normally.

        E.g. ``model.inject(Reply.cut("partial"))`` cuts the next chat stream after one chunk;
        ``model.inject(Reply.hang(), match=r"slow")`` hangs the next request whose prompt says "slow".
        A fault consumes no script entry. Faults are tried in the order they were added.

        Raises:
            OpenCodeConfigError: a bad ``times``, ``route`` or reply for the route (see :class:`Fault`).
        """
        fault = Fault(reply, route=route, times=times, match=match)
        with self._lock:
            self._faults.append(fault)
        return fault

    @property
    def faults(self) -> list[Fault]:
        """The injected faults, used up or not, in the order they were added (a copy)."""
        with self._lock:
            return list(self._faults)

    @property
    def script_remaining(self) -> int:
        """How many scripted replies are not used yet."""
        with self._lock:
            return len(self._script)

    def _take_fault(self, route: FaultRoute, request: RecordedRequest) -> Fault | None:
        for fault in self.faults:
            if fault.take(route, request):
                with self._lock:
                    self._faulted.append(request)
                return fault
        return None

    def _models_fault(self, request: RecordedRequest) -> AnyReply | None:
        fault = self._take_fault("models", request)
        return None if fault is None else fault.reply

    def _choose(self, request: RecordedRequest) -> AnyReply:
        fault = self._take_fault(route_of(request) or "chat", request)
        if fault is not None:
            return fault.reply
        if self.title is not None and request.is_title_request:
            return Completion(text=self.title)
        with self._lock:
            if self._script:
                self._script_used += 1
                return self._script.popleft()
            rules = list(self._rules)
        if self.builtin_rules:
            rules += BUILTIN_RULES
        # Matchers are user code: run them outside the lock.
        for rule in rules:
            if rule.matches(request):
                return rule.reply
        if self.strict and not request.is_title_request:
            with self._lock:
                self._unexpected.append(request)
            return strict_error(request)
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

    @property
    def unexpected_requests(self) -> list[RecordedRequest]:
        """The chat requests a strict model failed because nothing answered them (a copy)."""
        with self._lock:
            return list(self._unexpected)

    @property
    def faulted_requests(self) -> list[RecordedRequest]:
        """The requests answered by an injected fault, oldest first (a copy; see :attr:`Fault.served`)."""
        with self._lock:
            return list(self._faulted)

    def clear(self) -> None:
        """Forget the recorded requests, errors, unexpected and faulted requests.

        The script, rules and faults (with their counts) are kept.
        """
        with self._lock:
            self._requests.clear()
            self._errors.clear()
            self._unexpected.clear()
            self._faulted.clear()

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

    # --- assertions -------------------------------------------------------------------------------

    def unused_steps(self) -> list[str]:
        """One line per script entry not used yet and per fault with uses left (``times`` not ``None``)."""
        with self._lock:
            used, script = self._script_used, list(self._script)
        total = used + len(script)
        lines = [f"script entry {used + n} of {total}: {describe_reply(r)}" for n, r in enumerate(script, 1)]
        lines += [fault.describe() for fault in self.faults if (fault.remaining or 0) > 0]
        return lines

    def report(self) -> dict[str, Any]:
        """``{"unexpected": [...], "unused": [...], "faulted": [...]}``: one line per unexpected
        request, unused step (:meth:`unused_steps`) and faulted request. Also served as JSON on
        ``GET /_offline/report``, which is how ``OfflineModelProcess`` asserts."""
        return {
            "unexpected": [describe_request(r) for r in self.unexpected_requests],
            "unused": self.unused_steps(),
            "faulted": [describe_request(r) for r in self.faulted_requests],
        }

    def check(self) -> None:
        """Raise :class:`UnexpectedModelCall` if a strict model failed any request so far.

        Unused script entries are fine here (call it mid-test); :meth:`assert_complete` checks them.
        """
        raise_for_report(self.report(), complete=False, requests=self.unexpected_requests)

    def assert_complete(self) -> None:
        """Assert the model was used exactly as scripted, like openai-agents' scripted test model.

        Raises:
            UnexpectedModelCall: a strict model got requests nothing answered (it names each one:
                number, session, last user message or tool results; unused steps are listed too).
            UnconsumedModelSteps: script entries, or faults with uses left, were never used
                (it lists them).
        """
        raise_for_report(self.report(), complete=True, requests=self.unexpected_requests)


def _check_fault(fault: Any) -> Fault:
    if not isinstance(fault, Fault):
        raise OpenCodeConfigError(
            f"faults must be Fault objects (see OfflineModelServer.fail/inject), got {fault!r}"
        )
    return fault
