"""One turn on a server session: send the prompt, follow its events, answer requests, build the result.

1. subscribe to the session's events (the server's one event stream, routed by session);
2. post the prompt (``prompt_async``) with a user message id we chose;
3. answer permission and question requests with the callbacks, each in its own task so that
   events keep flowing;
4. stop when :class:`~opencode_wrapper._turn.tracker.TurnTracker` says the turn is over.

Every event of the turn goes to the ``sink`` the caller gives (the run handle: result, log,
observers, stream). Failures come back in the result (``server_failure``...), never as an
exception; a cancellation (the handle's timeout, abort or close) aborts the turn on the server,
follows it to its end for a short while, and is re-raised, so ``result()`` then holds everything
the turn did.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from opencode_wrapper._aio import finish, wait_within
from opencode_wrapper._model.event import Event, EventError
from opencode_wrapper._model.fold import Fold
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.run_error import PermissionRejection, RunError, server_error_kind
from opencode_wrapper._server.bus import Subscription
from opencode_wrapper._turn.callbacks import (
    PermissionCallback,
    QuestionCallback,
    read_answers,
    read_permission_reply,
)
from opencode_wrapper._turn.link import SessionLink
from opencode_wrapper._turn.structured import StructuredSpec
from opencode_wrapper._turn.tracker import TurnTracker
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeError, OpenCodeServerError, ServerHTTPError
from opencode_wrapper.hooks import Hooks, ToolUse, user_permission_action

__all__ = ["ABORT_SETTLE_S", "Turn"]

# After a timeout or a cancellation: how long, in all, the abort request plus following the turn
# to its end may take (so the partial result is complete and the session idle for the next turn).
# Short, because the caller is waiting: a timeout is reported within this of ``timeout_s``. A turn
# still running after it is aborted by opencode anyway, and a next prompt queues behind it.
ABORT_SETTLE_S = 1.5
# A session.error before our message was stored: how long our message may still take to appear
# before the prompt counts as refused (e.g. an agent that only exists in a file opencode reads).
_REFUSAL_GRACE_S = 3.0


class _SettleDeadline(Exception):
    """Internal: following an aborted turn took too long."""


class Turn:
    """One prompt on ``link`` and everything until its end.

    Args:
        link: the session (its lock must be held by the caller while :meth:`run` runs).
        message_id: our user message id (``fold`` counts only what answers it).
        parts: the prompt's parts (text, files).
        cfg: the turn's model/agent/tools.
        fold: the accumulator of the turn's events.
        sink: called with every event of the turn, after ``fold`` took it.
    """

    def __init__(
        self,
        link: SessionLink,
        *,
        message_id: str,
        parts: list[dict[str, Any]],
        cfg: RunConfig,
        fold: Fold,
        sink: Callable[[Event], None],
        on_permission: PermissionCallback | None = None,
        on_question: QuestionCallback | None = None,
        callback_timeout_s: float | None = None,
        structured: StructuredSpec | None = None,
        hooks: Hooks | None = None,
        user_permission: Any = None,
    ) -> None:
        self.link = link
        self.message_id = message_id
        self.parts = parts
        self.cfg = cfg
        self.fold = fold
        self.sink = sink
        self.on_permission = on_permission
        self.on_question = on_question
        self.callback_timeout_s = callback_timeout_s
        self.structured = structured
        self.hooks = hooks if hooks is not None and hooks.intercepts else None
        self.user_permission = user_permission
        self.tracker = TurnTracker(link.id, message_id)
        self.callback_errors: list[RunError] = []
        self.rejections: list[PermissionRejection] = []
        self.handlers: set[asyncio.Task[None]] = set()
        self.sub: Subscription | None = None
        self.sent_model = False
        self.abort_requested = False
        # opencode rejects every pending request of a session when one is rejected: a rejection
        # waits until the other requests (parallel tool calls) are decided and their answers sent.
        self._deciding = 0
        self._all_decided = asyncio.Event()
        self._all_decided.set()
        self._early: RunError | None = None
        self._failure: RunError | None = None
        self._stderr = ""

    # ------------------------------------------------------------------ the turn

    async def run(self) -> None:
        """Run the turn to its end; afterwards :meth:`result` is complete."""
        link = self.link
        server = link.server
        sub = self.sub = server.subscribe(link.id)
        link.active = self
        try:
            if await self._send():
                await self._follow(sub, None)
                if self.abort_requested:
                    # The turn may have ended on an idle that came before opencode ran the prompt:
                    # make sure nothing of it runs on after we report it aborted.
                    with contextlib.suppress(OpenCodeError):
                        await link.post_abort()
        except asyncio.CancelledError:
            await finish(self._abort_and_settle(sub))
            raise
        except OpenCodeServerError as exc:
            self._failure = RunError(
                kind="server_failure",
                message=exc.message or str(exc),
                status_code=exc.status_code if isinstance(exc, ServerHTTPError) else None,
            )
            self._stderr = exc.stderr
        finally:
            await self._stop_handlers()
            server.unsubscribe(sub)
            link.active = None

    async def _send(self) -> bool:
        """Post the prompt; ``False`` when the turn ended before (aborted, unknown agent)."""
        link = self.link
        body: dict[str, Any] = {"messageID": self.message_id, "parts": self.parts}
        if self.abort_requested:
            self._early = RunError(kind="aborted", message="aborted before the prompt was sent")
            return False
        if self.cfg.agent:
            known = await link.unknown_agent(self.cfg.agent)
            if known is not None:
                # opencode would only publish two session.error events and never go idle.
                self._early = RunError(
                    kind="session_error",
                    name="UnknownError",
                    message=f'Agent not found: "{self.cfg.agent}". Available agents: {", ".join(known)}',
                )
                return False
            body["agent"] = self.cfg.agent
        model = await link.model_for(self.cfg)
        if model is not None:
            body["model"] = model
            self.sent_model = True
        if self.cfg.tools:
            body["tools"] = {name: bool(on) for name, on in self.cfg.tools.items()}
        if self.structured is not None:
            body["format"] = {"type": "json_schema", "schema": self.structured.schema}
        if self.abort_requested:
            self._early = RunError(kind="aborted", message="aborted before the prompt was sent")
            return False
        await link.server.request(
            "POST", f"/session/{link.id}/prompt_async", params=link.where(), json_body=body
        )
        return True

    async def _follow(self, sub: Subscription, deadline: float | None) -> None:
        """Consume events until the turn is over; raise :class:`_SettleDeadline` at ``deadline``."""
        tracker = self.tracker
        loop = asyncio.get_running_loop()
        recheck_at: float | None = None
        while not tracker.finished:
            wake = min((t for t in (deadline, recheck_at) if t is not None), default=None)
            event = await sub.get(None if wake is None else max(0.0, wake - loop.time()))
            now = loop.time()
            if event is None:
                if deadline is not None and now >= deadline:
                    raise _SettleDeadline
                if recheck_at is not None and now >= recheck_at:
                    recheck_at = None
                    tracker.message_exists(await self._message_exists())
                continue
            if event.type == "server.heartbeat":
                await self._safety_check()
                continue
            self._take(event)
            if (
                self.abort_requested
                and event.type == "session.status"
                and tracker.status not in (None, "idle")
            ):
                # An abort that reached opencode before it ran the prompt did nothing: repeat it
                # while the turn still runs (opencode may ignore one sent as the loop starts).
                await self.link.post_abort()
            if tracker.refused and recheck_at is None:
                if await self._message_exists():
                    tracker.message_exists(True)
                else:
                    recheck_at = now + _REFUSAL_GRACE_S

    def _take(self, event: Event) -> None:
        self.link.record(event)  # the session log keeps the session's whole life
        self.tracker.feed(event)
        if not self.tracker.seen_user and event.type != "session.error":
            # Still the previous turn's tail (its late updates, a second idle): not this turn's.
            return
        self.fold.add(event)
        if event.type == "permission.asked":
            self._deciding += 1
            self._all_decided.clear()
            self._spawn(self._answer_permission(dict(event.properties)))
        elif event.type == "question.asked":
            self._spawn(self._answer_question(dict(event.properties)))
        self.sink(event)

    def request_abort(self) -> None:
        """Remember that the turn is to be aborted (it may not have reached opencode yet)."""
        self.abort_requested = True
        self.tracker.abort_requested = True

    async def _safety_check(self) -> None:
        """On each heartbeat (10 s): catch a lost idle event by asking the server directly."""
        tracker = self.tracker
        link = self.link
        if tracker.finished or not tracker.seen_user:
            return
        if self.abort_requested:
            await link.post_abort()
        status = await link.server.request("GET", "/session/status", params=link.where())
        if isinstance(status, dict) and link.id not in status:
            tracker.server_idle()

    async def _message_exists(self) -> bool:
        link = self.link
        try:
            await link.server.request(
                "GET", f"/session/{link.id}/message/{self.message_id}", params=link.where()
            )
        except ServerHTTPError as exc:
            if exc.status_code in (400, 404):
                return False
            raise
        return True

    async def _abort_and_settle(self, sub: Subscription) -> None:
        """Abort the turn and follow it to its end (bounded), so the session is idle afterwards."""
        self.request_abort()
        deadline = asyncio.get_running_loop().time() + ABORT_SETTLE_S
        with contextlib.suppress(OpenCodeError, _SettleDeadline):
            await self.link.post_abort(timeout_s=ABORT_SETTLE_S)
            await self._follow(sub, deadline)

    # ------------------------------------------------------------------ requests

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.handlers.add(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self.handlers.discard(task)
        if not task.cancelled() and task.exception() is not None and self.sub is not None:
            # The answer could not be sent (the server failed): opencode would wait for it
            # forever, so the turn fails now with that error.
            self.sub.fail(task.exception())  # type: ignore[arg-type]

    async def _stop_handlers(self) -> None:
        for task in list(self.handlers):
            task.cancel()
        if self.handlers:
            await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _ask(self, name: str, callback: Any, request: Any) -> tuple[Any, str | None]:
        """Call a callback with the deadline; ``(value, None)`` or ``(None, why it failed)``."""
        timeout = self.callback_timeout_s
        try:
            return await wait_within(callback(request), timeout), None
        except asyncio.TimeoutError:
            return None, f"{name} did not answer within callback_timeout_s={timeout!r}"
        except Exception as exc:
            return None, f"{name} raised {type(exc).__name__}: {exc}"

    def _callback_failed(self, name: str, problem: str, request: dict[str, Any]) -> None:
        self.callback_errors.append(
            RunError(
                kind="callback_error",
                message=f"{problem}; the request was rejected",
                detail={"callback": name, "request": request},
            )
        )

    async def _hooks_verdict(self, request: dict[str, Any]) -> tuple[str | None, str | None]:
        """``(decision, message)`` from the ``before_tool`` hooks; ``(None, None)``: none matched or
        all allowed (the caller's own permission map then decides)."""
        assert self.hooks is not None
        permission = str(request.get("permission") or "")
        tool = request.get("tool") if isinstance(request.get("tool"), dict) else {}
        call_id = tool.get("callID") if isinstance(tool, dict) else None
        call = next((c for c in self.fold.fields()["tool_calls"] if c.call_id == call_id), None)
        name = (call.name if call is not None else None) or permission
        matched = self.hooks.before(name, permission)
        patterns = request.get("patterns")
        use = ToolUse(
            name=name,
            input=dict(call.input) if call is not None else {},
            permission=permission,
            patterns=tuple(map(str, patterns)) if isinstance(patterns, list) else (),
            call_id=call_id if isinstance(call_id, str) else None,
            request=dict(request),
        )
        for hook in matched:
            answer, problem = await self._ask("before_tool", hook, use)
            if problem is not None:
                self._callback_failed("before_tool", problem, request)
                return "reject", None
            if answer is False:
                return "reject", None
            if isinstance(answer, str):
                return "reject", answer
        return None, None

    async def _answer_permission(self, request: dict[str, Any]) -> None:
        settled = False
        try:
            decision, message = await self._permission_decision(request)
            if decision == "reject":
                # Settled as far as the others are concerned: two rejections must not wait
                # for each other. Any other answer counts only once opencode has it.
                settled = True
                self._decided()
                await self._all_decided.wait()
            await self._send_permission_reply(request, decision, message)
        finally:
            if not settled:
                self._decided()

    def _decided(self) -> None:
        self._deciding -= 1
        if self._deciding <= 0:
            self._all_decided.set()

    async def _permission_decision(self, request: dict[str, Any]) -> tuple[str, str | None]:
        """``(reply, message)`` for a permission request: the hooks, your map, then ``on_permission``."""
        decision: str = "reject"
        message: str | None = None
        if self.hooks is not None:
            verdict, message = await self._hooks_verdict(request)
            if verdict is not None:
                return verdict, message
            patterns = request.get("patterns")
            own = user_permission_action(
                self.user_permission,
                str(request.get("permission") or ""),
                [str(p) for p in patterns] if isinstance(patterns, list) else [],
            )
            if own != "ask":  # the hooks asked opencode to ask; your own map said allow (or deny)
                return ("once" if own == "allow" else "reject"), None
        if self.on_permission is not None:
            value, problem = await self._ask("on_permission", self.on_permission, dict(request))
            if problem is None:
                try:
                    decision, message = read_permission_reply(value)
                except ValueError as exc:
                    problem = str(exc)
            if problem is not None:
                self._callback_failed("on_permission", problem, request)
        return decision, message

    async def _send_permission_reply(
        self, request: dict[str, Any], decision: str, message: str | None
    ) -> None:
        body: dict[str, Any] = {"reply": decision}
        if message is not None:
            body["message"] = message
        if decision == "reject":
            patterns = request.get("patterns")
            self.rejections.append(
                PermissionRejection(
                    permission=str(request.get("permission") or ""),
                    pattern=", ".join(map(str, patterns))
                    if isinstance(patterns, list) and patterns
                    else None,
                    message=message,
                )
            )
        await self._reply(f"/permission/{request.get('id')}/reply", body)

    async def _answer_question(self, request: dict[str, Any]) -> None:
        answers = None
        if self.on_question is not None:
            value, problem = await self._ask("on_question", self.on_question, dict(request))
            if problem is None:
                questions = request.get("questions")
                try:
                    answers = read_answers(value, questions if isinstance(questions, list) else [])
                except ValueError as exc:
                    problem = str(exc)
            if problem is not None:
                self._callback_failed("on_question", problem, request)
        request_id = request.get("id")
        if answers is None:
            await self._reply(f"/question/{request_id}/reject", None)
        else:
            await self._reply(f"/question/{request_id}/reply", {"answers": answers})

    async def _reply(self, path: str, body: dict[str, Any] | None) -> None:
        link = self.link
        try:
            await link.server.request("POST", path, params=link.where(), json_body=body)
        except ServerHTTPError as exc:
            if exc.status_code != 404:  # 404: already answered elsewhere, or the turn was aborted
                raise

    # ------------------------------------------------------------------ result

    def result(self) -> RunResult:
        """The turn's result so far (complete once :meth:`run` returned)."""
        link = self.link
        result = RunResult.from_fold(self.fold, session_id=link.session_id, exit_code=0, stderr=self._stderr)
        tracker = self.tracker
        if self._early is not None:
            result.error = self._early
        elif self._failure is not None:
            result.error = self._failure
        elif self.abort_requested and result.error is None and result.turns == 0:
            result.error = RunError(kind="aborted", message="aborted before opencode ran the prompt")
        if tracker.ended_without_message:
            refusal = tracker.refusal() or EventError(
                {"name": "UnknownError", "data": {"message": "prompt refused"}}
            )
            result.error = RunError.from_event_error(refusal, kind=server_error_kind(refusal))
        if self.rejections:
            result.permission_rejections = list(self.rejections)
        if self.callback_errors and (
            result.error is None or result.error.kind in ("permission_rejected", "question_rejected")
        ):
            first = self.callback_errors[0]
            if len(self.callback_errors) > 1:
                first.detail["others"] = [e.message for e in self.callback_errors[1:]]
            result.error = first
        if self.structured is not None and (result.error is None or result.error.kind == "structured_output"):
            self._check_structured(result)
        link.learn_default_model(self.fold.events, self.message_id, self.sent_model)
        return result

    def _check_structured(self, result: RunResult) -> None:
        assert self.structured is not None
        raw = result.structured
        if raw is None:
            if result.error is None:
                result.error = RunError(
                    kind="structured_output", message="the model did not produce structured output"
                )
            return
        value, problems = self.structured.check(raw)
        if problems:
            result.structured = None
            result.error = RunError(
                kind="structured_output",
                message="the structured output does not match output_schema: " + "; ".join(problems)[:2000],
                detail={"value": raw, "problems": problems},
            )
        else:
            result.structured = value
