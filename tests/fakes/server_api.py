"""A fake ``opencode serve`` API (1.18.33 shapes) for unit tests of the session turn engine: no process.

:class:`FakeServerAPI` is a real :class:`~opencode_wrapper._server.base.ServerBase` (its
``subscribe``, ``check_usable``, ``on_close``, ``aclose`` and event :class:`Bus` are the real ones)
whose :meth:`~FakeServerAPI.request` answers the routes the engine uses from memory and records
every call. Each ``prompt_async`` runs the next *script* (an ``async def script(p: Prompt)``) as
a task: it pushes event payloads into the real bus with ``p.emit(...)``, using the message id the
engine chose, and may wait for a request of the engine (``await p.wait_request("POST",
"/permission/per_1/reply")``) to play what opencode does next: no sleeps, only conditions.

:class:`SessionEvents` builds the payloads in the shapes opencode 1.18.33 sends on
``/global/event`` (unwrapped), see /work/shared/opencode-notes.md sections 3.5, 3.6 and 4.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opencode_wrapper._server.base import ServerBase
from opencode_wrapper._turn.tracker import format_message_id
from opencode_wrapper.errors import OpenCodeServerError, ServerHTTPError

__all__ = [
    "Call",
    "FakeServerAPI",
    "Payload",
    "Prompt",
    "Script",
    "SessionEvents",
    "tokens",
]

Payload = dict[str, Any]
Script = Callable[["Prompt"], Awaitable[None]]

_MISSING: Any = object()
_TS = 1795474381383


def tokens(total: int, *, input: int | None = None, output: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """A ``tokens`` object as opencode stores it on an assistant message."""
    return {
        "total": total,
        "input": total - output - reasoning if input is None else input,
        "output": output,
        "reasoning": reasoning,
        "cache": {"write": 0, "read": 0},
    }


@dataclass
class Call:
    """One request the engine made."""

    method: str
    path: str
    params: dict[str, str] | None
    body: Any
    timeout_s: float | None


class SessionEvents:
    """Event payloads of one session, as ``/global/event`` carries them (``payload`` unwrapped)."""

    def __init__(self, session_id: str, counter: Iterable[int]) -> None:
        self.session_id = session_id
        self._ids = iter(counter)

    def _next(self) -> int:
        return next(self._ids)

    def new_part_id(self) -> str:
        """A fresh part id; ids ascend in creation order, as opencode's do."""
        return f"prt_{self._next():012d}"

    def event(self, kind: str, **props: Any) -> Payload:
        return {
            "id": f"evt_{self._next():012d}",
            "type": kind,
            "properties": {"sessionID": self.session_id, **props},
        }

    # ------------------------------------------------------------------ session

    def created(self, parent_id: str | None = None) -> Payload:
        info: dict[str, Any] = {"id": self.session_id, "title": "child", "version": "1.18.33"}
        if parent_id is not None:
            info["parentID"] = parent_id
        return self.event("session.created", info=info)

    def updated(self) -> Payload:
        return self.event("session.updated", info={"id": self.session_id, "agent": "build"})

    def diff(self) -> Payload:
        return self.event("session.diff", diff=[])

    def status(self, kind: str) -> Payload:
        return self.event("session.status", status={"type": kind})

    def idle(self) -> list[Payload]:
        """What a normal end sends: ``session.status`` idle, then ``session.idle``."""
        return [self.status("idle"), self.event("session.idle")]

    def error(self, name: str, message: str, **data: Any) -> Payload:
        return self.event("session.error", error={"name": name, "data": {"message": message, **data}})

    # ------------------------------------------------------------------ messages and parts

    def user(self, message_id: str, text: str = "the prompt") -> list[Payload]:
        """Our user message stored, and its text part echoed back."""
        info = {
            "id": message_id,
            "sessionID": self.session_id,
            "role": "user",
            "time": {"created": _TS},
            "agent": "build",
            "model": {"providerID": "fake", "modelID": "m1"},
        }
        part = {
            "id": self.new_part_id(),
            "sessionID": self.session_id,
            "messageID": message_id,
            "type": "text",
            "text": text,
        }
        return [self.event("message.updated", info=info), self.event("message.part.updated", part=part)]

    def assistant(
        self,
        message_id: str,
        parent_id: str,
        *,
        completed: bool = False,
        finish: str | None = None,
        tokens: dict[str, Any] | None = None,
        cost: float = 0.0,
        error: dict[str, Any] | None = None,
        structured: Any = _MISSING,
    ) -> Payload:
        info: dict[str, Any] = {
            "id": message_id,
            "sessionID": self.session_id,
            "parentID": parent_id,
            "role": "assistant",
            "mode": "build",
            "agent": "build",
            "modelID": "m1",
            "providerID": "fake",
            "cost": cost,
            "tokens": tokens if tokens is not None else {"total": 0, "input": 0, "output": 0},
            "time": {"created": _TS, **({"completed": _TS + 50} if completed else {})},
        }
        if finish is not None:
            info["finish"] = finish
        if error is not None:
            info["error"] = error
        if structured is not _MISSING:
            info["structured"] = structured
        return self.event("message.updated", info=info)

    def part(self, message_id: str, part_id: str, kind: str, **fields: Any) -> Payload:
        part = {"id": part_id, "sessionID": self.session_id, "messageID": message_id, "type": kind, **fields}
        return self.event("message.part.updated", part=part)

    def delta(self, message_id: str, part_id: str, text: str) -> Payload:
        return self.event(
            "message.part.delta", messageID=message_id, partID=part_id, field="text", delta=text
        )

    def text_start(self, message_id: str) -> tuple[str, Payload]:
        """A text part's opening snapshot (empty, no ``time.end``): its id and the payload."""
        pid = self.new_part_id()
        return pid, self.part(message_id, pid, "text", text="", time={"start": _TS})

    def text(self, message_id: str, chunks: list[str]) -> list[Payload]:
        """A streamed text part: the opening snapshot, one delta per chunk, the whole part at its end."""
        pid, opening = self.text_start(message_id)
        whole = self.part(message_id, pid, "text", text="".join(chunks), time={"start": _TS, "end": _TS + 9})
        return [opening, *(self.delta(message_id, pid, chunk) for chunk in chunks), whole]

    def step_start(self, message_id: str) -> Payload:
        return self.part(message_id, self.new_part_id(), "step-start", snapshot="fe8a5305")

    def step_finish(
        self, message_id: str, reason: str, *, tokens: dict[str, Any] | None = None, cost: float = 0.0
    ) -> Payload:
        return self.part(
            message_id, self.new_part_id(), "step-finish", reason=reason, tokens=tokens or {}, cost=cost
        )

    def tool(self, message_id: str, part_id: str, tool: str, call_id: str, **state: Any) -> Payload:
        """A tool part in ``state`` (``status`` = pending, running, completed or error)."""
        return self.part(message_id, part_id, "tool", tool=tool, callID=call_id, state=state)

    def answer(
        self,
        message_id: str,
        parent_id: str,
        chunks: list[str],
        *,
        tokens: dict[str, Any],
        cost: float = 0.0,
        **info: Any,
    ) -> list[Payload]:
        """One whole text step, as measured: the message is re-sent whole (tokens included) twice."""
        return [
            self.assistant(message_id, parent_id),
            self.status("busy"),
            self.step_start(message_id),
            *self.text(message_id, chunks),
            self.step_finish(message_id, "stop", tokens=tokens, cost=cost),
            self.assistant(message_id, parent_id, finish="stop", tokens=tokens, cost=cost, **info),
            self.assistant(
                message_id, parent_id, completed=True, finish="stop", tokens=tokens, cost=cost, **info
            ),
        ]

    # ------------------------------------------------------------------ requests

    def permission(self, request_id: str, message_id: str, call_id: str, command: str) -> Payload:
        return self.event(
            "permission.asked",
            id=request_id,
            permission="bash",
            patterns=[command],
            metadata={"command": command},
            always=[command.split(" ")[0] + " *"],
            tool={"messageID": message_id, "callID": call_id},
        )

    def question(self, request_id: str, message_id: str, call_id: str, questions: list[Any]) -> Payload:
        return self.event(
            "question.asked",
            id=request_id,
            questions=questions,
            tool={"messageID": message_id, "callID": call_id},
        )


@dataclass
class Prompt:
    """What a script gets: the prompt the engine posted, and ways to answer it."""

    server: FakeServerAPI
    session_id: str
    message_id: str
    body: dict[str, Any]
    ev: SessionEvents
    _assistants: dict[int, str] = field(default_factory=dict)

    def assistant_id(self, n: int) -> str:
        """The id of this turn's ``n``-th assistant message (after our message, ascending)."""
        if n not in self._assistants:
            self._assistants[n] = format_message_id(int(self.message_id[4:16], 16) + n)
        return self._assistants[n]

    def emit(self, *items: Payload | list[Payload]) -> None:
        self.server.emit(*items)

    async def wait_request(self, method: str, path: str) -> Call:
        return await self.server.wait_request(method, path)


def _not_found(what: str) -> ServerHTTPError:
    body = f'{{"name":"NotFoundError","data":{{"message":"{what}"}}}}'
    return ServerHTTPError(f"HTTP 404: {what}", status_code=404, body=body)


def _bad_request(what: str) -> ServerHTTPError:
    body = f'{{"name":"BadRequest","data":{{"message":"{what}"}}}}'
    return ServerHTTPError(f"HTTP 400: {what}", status_code=400, body=body)


class FakeServerAPI(ServerBase):
    """A running server without a process: the routes the turn engine uses, answered from memory.

    Attributes:
        calls: every request, in order.
        scripts: what each next ``prompt_async`` plays (one script per prompt, in order).
        status: the answer of ``GET /session/status`` (idle sessions are absent, as in opencode).
        agents: the names ``GET /agent`` lists.
        config: the answer of ``GET /config``.
        store_prompts: whether a posted prompt's message becomes visible to
            ``GET /session/{id}/message/{mid}`` (``False``: opencode refused it before storing it).
        http_errors: ``(method, path) -> status`` to answer with an HTTP error instead.
    """

    def __init__(self) -> None:
        super().__init__()
        # What check_usable() and alive look at: "running", with no process and no transport.
        self._state = "running"
        self.url = "http://127.0.0.1:4096"
        self.version = (1, 18, 33)
        self.calls: list[Call] = []
        self.scripts: collections.deque[Script] = collections.deque()
        self.prompts: list[Prompt] = []
        self.status: dict[str, Any] = {}
        self.agents: list[str] = ["build", "explore", "general", "plan"]
        self.config: dict[str, Any] = {"model": "fake/m1"}
        self.store_prompts = True
        self.http_errors: dict[tuple[str, str], int] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.stored: set[str] = set()
        self.pending: set[str] = set()  # permission and question requests not answered yet
        self.unexpected: list[Call] = []
        self._ids = itertools.count(1)
        self._session_events: dict[str, SessionEvents] = {}
        self._changed = asyncio.Condition()
        self._scripts_running: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ test side

    def events(self, session_id: str) -> SessionEvents:
        """The payload builder of ``session_id`` (ids shared across the server, ascending)."""
        if session_id not in self._session_events:
            self._session_events[session_id] = SessionEvents(session_id, self._ids)
        return self._session_events[session_id]

    def emit(self, *items: Payload | list[Payload]) -> None:
        """Push payloads into the real bus, in order."""
        for item in items:
            for payload in item if isinstance(item, list) else [item]:
                if payload.get("type") in ("permission.asked", "question.asked"):
                    self.pending.add(str(payload["properties"]["id"]))
                self._bus.dispatch(payload)

    def heartbeat(self) -> None:
        self.emit({"type": "server.heartbeat", "properties": {}})

    def fail(self, error: OpenCodeServerError) -> None:
        """The server dies: every subscriber and every later request gets ``error``."""
        self._fail_all(error)

    def requests(self, method: str | None = None, path: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if (method is None or c.method == method) and (path is None or c.path == path)
        ]

    def routes(self) -> list[tuple[str, str]]:
        return [(c.method, c.path) for c in self.calls]

    async def wait_for(self, matches: Callable[[Call], bool], count: int = 1) -> Call:
        """The ``count``-th request that ``matches``, once the engine made it."""
        async with self._changed:
            await self._changed.wait_for(lambda: sum(map(matches, self.calls)) >= count)
        return [c for c in self.calls if matches(c)][count - 1]

    async def wait_request(self, method: str, path: str, count: int = 1) -> Call:
        """The ``count``-th request ``method path``, once the engine made it."""
        return await self.wait_for(lambda c: (c.method, c.path) == (method, path), count)

    async def verify(self) -> None:
        """Raise what went wrong on the fake's side: a script failed or never ended, unknown routes."""
        stuck = [task for task in self._scripts_running if not task.done()]
        for task in stuck:
            task.cancel()
        outcomes = await asyncio.gather(*self._scripts_running, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome
        assert not stuck, f"{len(stuck)} script(s) still waiting at the end of the test"
        assert not self.unexpected, f"requests to routes the fake does not know: {self.unexpected}"
        assert not self.scripts, f"{len(self.scripts)} script(s) were never played (no prompt came)"

    # ------------------------------------------------------------------ the API

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        timeout_s: float | None = 60.0,
    ) -> Any:
        self.check_usable()
        call = Call(
            method, path, dict(params) if params is not None else None, copy.deepcopy(json_body), timeout_s
        )
        # The answer is decided before any waiting script runs (it sees the state the engine saw).
        answer: Any = None
        failure: ServerHTTPError | None = None
        forced = self.http_errors.get((method, path))
        try:
            if forced is not None:
                raise ServerHTTPError(f"HTTP {forced}", status_code=forced, body='{"name":"UnknownError"}')
            answer = self._answer(call)
        except ServerHTTPError as exc:
            failure = exc
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        if failure is not None:
            raise failure
        return answer

    def _answer(self, call: Call) -> Any:
        method, path, body = call.method, call.path, call.body
        if (method, path) == ("POST", "/session"):
            sid = f"ses_{next(self._ids):012d}fakeSession"
            directory = (call.params or {}).get("directory", "")
            self.sessions[sid] = {
                "id": sid,
                "title": (body or {}).get("title", "New session"),
                "directory": directory,
            }
            return dict(self.sessions[sid])
        if (method, path) == ("GET", "/session/status"):
            return copy.deepcopy(self.status)
        if (method, path) == ("GET", "/agent"):
            return [{"name": name, "mode": "primary"} for name in self.agents]
        if (method, path) == ("GET", "/config"):
            return copy.deepcopy(self.config)
        match = re.fullmatch(r"/session/([^/]+)(?:/(.*))?", path)
        if match is not None:
            return self._session_route(call, match.group(1), match.group(2))
        match = re.fullmatch(r"/(permission|question)/([^/]+)/(reply|reject)", path)
        if match is not None and method == "POST":
            return self._reply(call, match.group(1), match.group(2), match.group(3))
        self.unexpected.append(call)
        raise _not_found(f"no route {method} {path}")

    def _session_route(self, call: Call, sid: str, rest: str | None) -> Any:
        method = call.method
        if rest == "abort" and method == "POST":
            return True  # opencode answers true even for an idle or unknown session
        if sid not in self.sessions:
            raise _not_found(f"Session not found: {sid}")
        if rest is None and method == "GET":
            return dict(self.sessions[sid])
        if rest is None and method == "DELETE":
            del self.sessions[sid]
            return True
        if rest == "prompt_async" and method == "POST":
            return self._prompt(call, sid)
        found = re.fullmatch(r"message/([^/]+)", rest or "")
        if found is not None and method == "GET":
            mid = found.group(1)
            if mid not in self.stored:
                raise _not_found(f"Message not found: {mid}")
            return {"info": {"id": mid, "sessionID": sid, "role": "user"}, "parts": []}
        self.unexpected.append(call)
        raise _not_found(f"no route {method} /session/{sid}/{rest}")

    def _prompt(self, call: Call, sid: str) -> None:
        body = call.body
        mid = body.get("messageID") if isinstance(body, dict) else None
        if not isinstance(mid, str) or not mid.startswith("msg"):
            raise _bad_request('Expected a string starting with "msg"')
        if self.store_prompts:
            self.stored.add(mid)
        prompt = Prompt(self, sid, mid, body, self.events(sid))
        self.prompts.append(prompt)
        if not self.scripts:
            raise AssertionError(f"a prompt came and no script was left to play: {body!r}")
        self._scripts_running.append(asyncio.ensure_future(self.scripts.popleft()(prompt)))
        return None  # 204

    def _reply(self, call: Call, what: str, request_id: str, action: str) -> bool:
        body = call.body
        if what == "permission":
            if action != "reply":
                raise _not_found(f"no route POST /permission/{request_id}/reject")
            if not isinstance(body, dict) or body.get("reply") not in ("once", "always", "reject"):
                raise _bad_request(f'Expected "once" | "always" | "reject", got {body!r}')
        elif action == "reply" and not (isinstance(body, dict) and isinstance(body.get("answers"), list)):
            raise _bad_request(f"Expected answers, got {body!r}")
        if request_id not in self.pending:
            raise _not_found(f"{what.capitalize()} request not found: {request_id}")
        self.pending.discard(request_id)
        return True
