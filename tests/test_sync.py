"""The blocking API (opencode_wrapper.sync) against the fake ``opencode``: loop thread, parity, callbacks.

Interrupts (Ctrl-C), closing while a run goes on and the interpreter's exit are in
tests/test_sync_interrupt.py; the real opencode in tests/test_sync_e2e.py.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import events as E
from fakes.opencode import FakeOpenCode, err, exit_with, hang, out, pid_alive, signal_self
from opencode_wrapper import (
    AsyncOpenCodeClient,
    Event,
    OpenCodeCancelledError,
    OpenCodeConfigError,
    OpenCodeProcessError,
    OpenCodeTimeoutError,
    Progress,
    Task,
    sync,
)
from opencode_wrapper._sync.callbacks import SyncRunOptions, as_async_callback
from opencode_wrapper._sync.loop import LoopThread
from opencode_wrapper.backends.request import RunOptions

PROMPT = "Say hello"


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the real user's opencode config and data out of these tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))


@pytest.fixture
def fake(tmp_path: Path) -> FakeOpenCode:
    return FakeOpenCode(tmp_path / "fakebin")


@pytest.fixture
def client(fake: FakeOpenCode) -> Iterator[sync.Client]:
    with sync.Client(fake.path, startup_delay_s=0) as made:
        yield made


@pytest.fixture
def default_on_fake(fake: FakeOpenCode, monkeypatch: pytest.MonkeyPatch) -> Iterator[sync.Client]:
    """A fresh default client, finding the fake through OPENCODE_BINARY; closed afterwards."""
    monkeypatch.setenv("OPENCODE_BINARY", str(fake.path))
    sync.default_client().close()
    made = sync.default_client()
    yield made
    made.close()


def _wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# ----------------------------------------------------------------------------- the loop thread


def test_the_loop_thread_starts_on_the_first_call_and_ends_with_close(
    fake: FakeOpenCode, workspace: Path
) -> None:
    fake.emit(E.simple_turn("one"))
    client = sync.Client(fake.path, startup_delay_s=0)
    assert client._loop.thread is None  # nothing runs before the first call
    assert client.run(PROMPT, workspace).final_text == "one"
    thread = client._loop.thread
    assert thread is not None and thread.is_alive() and thread.daemon
    assert thread is not threading.current_thread()
    client.run(PROMPT, workspace)
    assert client._loop.thread is thread  # one thread per client, for all its calls
    client.close()
    assert client.closed and not thread.is_alive()
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="is closed"):
        client.run(PROMPT, workspace)
    assert len(fake.calls()) == 2


def test_each_client_has_its_own_loop_thread(fake: FakeOpenCode, workspace: Path) -> None:
    fake.emit(E.simple_turn())
    with sync.Client(fake.path, startup_delay_s=0) as a, sync.Client(fake.path, startup_delay_s=0) as b:
        a.run(PROMPT, workspace)
        b.run(PROMPT, workspace)
        assert a._loop.thread is not b._loop.thread
        threads = [a._loop.thread, b._loop.thread]
    assert not any(t is not None and t.is_alive() for t in threads)


def test_a_client_nobody_references_is_closed(fake: FakeOpenCode, workspace: Path) -> None:
    fake.emit(E.simple_turn())
    client = sync.Client(fake.path, startup_delay_s=0)
    client.run(PROMPT, workspace)
    thread = client._loop.thread
    assert thread is not None and thread.is_alive()
    del client
    gc.collect()
    assert not thread.is_alive()


def test_a_client_that_never_ran_starts_no_thread(fake: FakeOpenCode) -> None:
    before = threading.active_count()
    with sync.Client(fake.path) as client:
        assert client._loop.thread is None
    assert threading.active_count() == before


def test_client_arguments_are_checked_like_the_async_client(fake: FakeOpenCode) -> None:
    for bad in ({"startup_concurrency": 0}, {"max_servers": 0}, {"startup_delay_s": -1}):
        with pytest.raises(OpenCodeConfigError) as sync_error:
            sync.Client(fake.path, **bad)  # type: ignore[arg-type]
        with pytest.raises(OpenCodeConfigError) as async_error:
            AsyncOpenCodeClient(fake.path, **bad)  # type: ignore[arg-type]
        assert str(sync_error.value) == str(async_error.value)


def test_calling_the_sync_api_from_its_own_loop_thread_is_refused() -> None:
    loop = LoopThread("test-loop", _nothing)

    async def reenter(call: Any) -> str:
        try:
            loop.submit(lambda inner: _nothing())
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    try:
        assert "its own event loop thread" in loop.submit(reenter).result()
    finally:
        loop.close()


async def _nothing() -> None:
    return None


# ----------------------------------------------------------------------------- same results and errors


async def _async_outcome(fake: FakeOpenCode, workspace: Path, **options: Any) -> tuple[Any, Any]:
    try:
        return await AsyncOpenCodeClient(fake.path, startup_delay_s=0).async_run(
            PROMPT, workspace, **options
        ), None
    except Exception as exc:
        return None, exc


SCENARIOS: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "ok": ([out(E.step_start()), out(E.text("fine")), out(E.step_finish()), exit_with(0)], {}),
    "tool turn": ([*map(out, E.tool_turn()), exit_with(0)], {}),
    "api error": ([out(E.step_start()), out(E.api_error(401)), exit_with(1)], {}),
    "crash": ([err("boom\n"), exit_with(3)], {"max_retries": 0}),
    "sigterm from outside": ([out(E.step_start()), signal_self("TERM")], {}),
    "timeout": ([out(E.step_start()), out(E.text("half")), hang()], {"timeout_s": 1.0}),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_run_returns_and_raises_what_async_run_does(
    scenario: str, fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    actions, options = SCENARIOS[scenario]
    fake.script(actions)
    expected_result, expected_error = asyncio.run(_async_outcome(fake, workspace, **options))
    try:
        result, error = client.run(PROMPT, workspace, **options), None
    except Exception as exc:
        result, error = None, exc
    assert type(error) is type(expected_error)
    if error is None:
        assert result is not None and expected_result is not None
        assert (result.final_text, result.tools, result.token_usage) == (
            expected_result.final_text,
            expected_result.tools,
            expected_result.token_usage,
        )
        assert [ev.type for ev in result.events] == [ev.type for ev in expected_result.events]
        return
    assert isinstance(error, OpenCodeProcessError | OpenCodeTimeoutError | OpenCodeCancelledError)
    assert isinstance(expected_error, type(error))
    assert error.result is not None and expected_error.result is not None
    assert error.result.error is not None and expected_error.result.error is not None
    assert error.result.error.kind == expected_error.result.error.kind
    assert [ev.type for ev in error.result.events] == [ev.type for ev in expected_error.result.events]
    assert str(error) == str(expected_error)
    assert all(not pid_alive(call["pid"]) for call in fake.calls())


def test_bad_options_raise_before_anything_starts(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    with pytest.raises(OpenCodeConfigError, match="timeout_s"):
        client.run(PROMPT, workspace, timeout_s=-1)
    with pytest.raises(OpenCodeConfigError, match="does-not-exist"):
        client.run(PROMPT, workspace / "does-not-exist")
    with pytest.raises(OpenCodeConfigError, match="timeout_s"):
        client.stream(PROMPT, workspace, timeout_s="soon")  # type: ignore[arg-type]
    # Run mode cannot answer permission requests: refused, as async_run refuses it.
    with pytest.raises(OpenCodeConfigError, match="on_permission") as sync_error:
        client.run(PROMPT, workspace, on_permission=lambda request: "once")
    assert "run" in str(sync_error.value)
    with pytest.raises(TypeError, match="colour"):
        client.run(PROMPT, workspace, colour="blue")  # type: ignore[call-arg]
    assert fake.calls() == []


def test_sync_options_are_the_async_options() -> None:
    # The sync options are the async ones (RunSettings plus the callbacks, which may be plain there).
    assert SyncRunOptions.__optional_keys__ == RunOptions.__optional_keys__


# ----------------------------------------------------------------------------- a loop in the caller's thread


async def test_the_sync_api_works_inside_a_running_event_loop(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    running = asyncio.get_running_loop()
    fake.emit(E.simple_turn("from inside a loop"))
    assert client.run(PROMPT, workspace).final_text == "from inside a loop"
    events = client.stream(PROMPT, workspace)
    assert [ev.type for ev in events] == ["step_start", "text", "step_finish"]
    assert events.result.final_text == "from inside a loop"
    assert asyncio.get_running_loop() is running
    assert client._loop.thread is not threading.current_thread()


# ----------------------------------------------------------------------------- streams


def test_stream_yields_the_events_then_raises_like_run(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.script([out(E.step_start()), out(E.text("partial")), out(E.api_error(401)), exit_with(1)])
    events = client.stream(PROMPT, workspace)
    assert fake.calls() == []  # nothing starts before the iteration
    seen: list[str] = []
    with pytest.raises(OpenCodeProcessError) as info:
        for event in events:
            seen.append(event.type)
    assert seen == ["step_start", "text", "error"]
    assert events.result is info.value.result
    assert events.result.error is not None and events.result.error.kind == "api_error"
    assert list(events) == []  # ended: no more events, no second error


def test_stream_result_is_unknown_until_its_end(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.emit(E.simple_turn("done"))
    with client.stream(PROMPT, workspace) as events:
        with pytest.raises(RuntimeError, match="not ended"):
            _ = events.result
        assert next(events).type == "step_start"
        rest = list(events)
    assert [ev.type for ev in rest] == ["text", "step_finish"]
    assert events.result.ok and events.result.final_text == "done"


@pytest.mark.parametrize("how", ["close", "with", "garbage collection"])
def test_a_stream_left_early_ends_its_run(
    how: str, fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.script([out(E.step_start()), out(E.text("half")), hang()])
    if how == "with":
        with client.stream(PROMPT, workspace) as events:
            assert next(events).type == "step_start"
        assert not pid_alive(fake.calls()[0]["pid"])
    elif how == "close":
        events = client.stream(PROMPT, workspace)
        assert next(events).type == "step_start"
        events.close()
        assert not pid_alive(fake.calls()[0]["pid"])
        assert list(events) == []
    else:
        events = client.stream(PROMPT, workspace)
        assert next(events).type == "step_start"
        pid = fake.calls()[0]["pid"]
        del events
        gc.collect()
        _wait_until(lambda: not pid_alive(pid))
    fake.emit(E.simple_turn("after"))
    assert client.run(PROMPT, workspace).final_text == "after"


# ----------------------------------------------------------------------------- callbacks


def test_on_event_runs_in_the_calling_thread(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.emit(E.simple_turn())
    seen: list[tuple[str, int]] = []

    def on_event(event: Event) -> None:
        seen.append((event.type, threading.get_ident()))

    result = client.run(PROMPT, workspace, on_event=on_event)
    assert seen == [(ev.type, threading.get_ident()) for ev in result.events]
    seen.clear()
    streamed = [ev.type for ev in client.stream(PROMPT, workspace, on_event=on_event)]
    assert [kind for kind, _ in seen] == streamed and {ident for _, ident in seen} == {threading.get_ident()}

    seen.clear()
    worker_ident: list[int] = []

    def in_a_worker() -> None:
        worker_ident.append(threading.get_ident())
        client.run(PROMPT, workspace, on_event=on_event)

    worker = threading.Thread(target=in_a_worker)
    worker.start()
    worker.join()
    assert seen and {ident for _, ident in seen} == set(worker_ident)


def test_an_on_event_that_raises_is_logged_and_ignored(
    fake: FakeOpenCode, client: sync.Client, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.emit(E.simple_turn("still fine"))

    def broken(event: Event) -> None:
        raise ValueError("a broken view")

    with caplog.at_level(logging.ERROR, logger="opencode_wrapper"):
        assert client.run(PROMPT, workspace, on_event=broken).final_text == "still fine"
    assert sum("raised; ignored" in record.getMessage() for record in caplog.records) == 3


def test_an_async_or_uncallable_on_event_is_refused(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    async def coroutine_view(event: Event) -> None:
        return None

    for bad in (coroutine_view, "print"):
        with pytest.raises(OpenCodeConfigError, match="on_event must be a plain function"):
            client.run(PROMPT, workspace, on_event=bad)  # type: ignore[arg-type]
    with pytest.raises(OpenCodeConfigError, match="on_permission must be a function"):
        sync.Session(client, workspace, on_permission=42)  # type: ignore[arg-type]
    with pytest.raises(OpenCodeConfigError, match=r"client must be a sync\.Client"):
        sync.Session(AsyncOpenCodeClient(fake.path), workspace)  # type: ignore[arg-type]
    session = sync.Session(client, workspace)
    for method in (session.send, session.stream):
        with pytest.raises(RuntimeError, match=r"inside 'with sync\.Session"):
            method(PROMPT)
    session.close()  # never entered: nothing to end
    assert fake.calls() == []


async def test_a_plain_permission_callback_runs_in_a_worker_thread() -> None:
    where: list[int] = []

    def decide(request: dict[str, Any]) -> str:
        where.append(threading.get_ident())
        return "once" if request["permission"] == "bash" else "reject"

    wrapped = as_async_callback(decide, "on_permission")
    assert inspect.iscoroutinefunction(wrapped)  # what the async API requires
    loop = LoopThread("callback-test", _nothing)
    try:

        async def ask(call: Any) -> tuple[str, int]:
            return await wrapped({"permission": "bash"}), threading.get_ident()

        answer, loop_ident = loop.submit(ask).result()
    finally:
        loop.close()
    assert answer == "once"
    assert where and where[0] not in (loop_ident, threading.get_ident())

    async def already_async(request: dict[str, Any]) -> str:
        return "always"

    assert as_async_callback(already_async, "on_permission") is already_async
    assert as_async_callback(None, "on_question") is None


# ----------------------------------------------------------------------------- run_many


def test_run_many_returns_every_outcome_and_calls_back_in_this_thread(
    fake: FakeOpenCode, workspace: Path, default_on_fake: sync.Client
) -> None:
    fake.script([out(E.step_start()), out(E.text("ok")), out(E.step_finish()), exit_with(0)])
    me = threading.get_ident()
    events: list[tuple[int, str, int]] = []
    progress: list[Progress] = []

    def on_progress(snapshot: Progress) -> None:
        assert threading.get_ident() == me
        progress.append(snapshot)

    outcomes = sync.run_many(
        [Task(PROMPT, workspace, name="a"), (PROMPT, workspace)],
        backend="run",
        binary=fake.path,
        on_event=lambda index, event: events.append((index, event.type, threading.get_ident())),
        on_progress=on_progress,
    )
    assert [o.index for o in outcomes] == [0, 1] and all(o.ok for o in outcomes)
    assert [o.result.final_text for o in outcomes if o.result] == ["ok", "ok"]
    assert sorted(i for i, kind, _ in events if kind == "text") == [0, 1]
    assert {ident for *_, ident in events} == {me}
    # Each snapshot is the batch as it was at that moment, not its final state.
    assert [(p.started, p.finished) for p in progress][-1] == (2, 2)
    assert min(p.finished for p in progress) == 0
    assert len(fake.calls()) == 2


def test_an_async_on_progress_runs_on_the_clients_loop(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.emit(E.simple_turn())
    where: set[int] = set()

    async def on_progress(progress: Progress) -> None:
        where.add(threading.get_ident())

    [outcome] = sync.run_many([(PROMPT, workspace)], client=client, on_progress=on_progress)
    assert outcome.ok
    assert client._loop.thread is not None and where == {client._loop.thread.ident}


def test_run_many_on_a_client_uses_its_backend(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.emit(E.simple_turn("on the client"))
    [outcome] = sync.run_many([(PROMPT, workspace)], client=client)
    assert outcome.ok and outcome.result is not None and outcome.result.final_text == "on the client"
    with pytest.raises(OpenCodeConfigError, match=r"client must be a sync\.Client"):
        sync.run_many([(PROMPT, workspace)], client=AsyncOpenCodeClient(fake.path))  # type: ignore[arg-type]
    with pytest.raises(OpenCodeConfigError, match=r"task #1"):
        sync.run_many([(PROMPT, workspace), (PROMPT, workspace / "missing")], client=client)
    assert len(fake.calls()) == 1


def test_iter_run_many_yields_outcomes_and_stops_the_rest_when_closed(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    # The first invocation answers, the others hang until they are stopped.
    fake.script(
        [out(E.step_start()), out(E.text("first")), out(E.step_finish()), exit_with(0)],
        [out(E.step_start()), hang()],
    )
    with sync.iter_run_many([(PROMPT, workspace)] * 3, client=client, concurrency=3) as outcomes:
        first = next(outcomes)
        assert first.ok and first.result is not None and first.result.final_text == "first"
        _wait_until(lambda: len(fake.calls()) == 3)
    assert all(not pid_alive(call["pid"]) for call in fake.calls())


# ----------------------------------------------------------------------------- the default client


def test_module_functions_use_one_default_client(
    fake: FakeOpenCode, workspace: Path, default_on_fake: sync.Client
) -> None:
    fake.emit(E.simple_turn("default"))
    assert sync.run(PROMPT, workspace).final_text == "default"
    assert [ev.type for ev in sync.stream(PROMPT, workspace)] == ["step_start", "text", "step_finish"]
    assert sync.default_client() is default_on_fake
    default_on_fake.close()
    replacement = sync.default_client()
    assert replacement is not default_on_fake and not replacement.closed
    replacement.close()
