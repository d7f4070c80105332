"""Ctrl-C, closing and exiting while a blocking call runs (opencode_wrapper.sync, fake ``opencode``).

A ``KeyboardInterrupt`` reaches the main thread only, so these tests must run in it (pytest and
its xdist workers run tests there). Each interrupt is sent once the main thread is known to be
blocked in the sync API's wait: another thread watches the main thread's stack (no timing guess).
"""

from __future__ import annotations

import _thread
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fakes import events as E
from fakes.opencode import FakeOpenCode, hang, out, pid_alive
from opencode_wrapper import Event, OpenCodeCancelledError, sync
from opencode_wrapper._sync.loop import Call, LoopThread

PROMPT = "Say hello"
LOOP_MODULE = os.path.join("_sync", "loop.py")


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))


@pytest.fixture(autouse=True)
def in_the_main_thread() -> None:
    assert threading.current_thread() is threading.main_thread(), "Ctrl-C reaches the main thread only"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.fixture
def fake(tmp_path: Path) -> FakeOpenCode:
    return FakeOpenCode(tmp_path / "fakebin")


@pytest.fixture
def client(fake: FakeOpenCode) -> Iterator[sync.Client]:
    with sync.Client(fake.path, startup_delay_s=0) as made:
        yield made


def _blocked_in(function: str) -> bool:
    """Whether the main thread's innermost frame of the sync loop module is ``function``."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        if frame.f_code.co_filename.endswith(LOOP_MODULE):
            return frame.f_code.co_name == function
        frame = frame.f_back
    return False


def _wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _sigint() -> None:
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


INTERRUPTS: dict[str, Callable[[], None]] = {
    "interrupt_main": _thread.interrupt_main,  # no real signal: found by the wait's polling
    "SIGINT": _sigint,  # a real signal: interrupts the wait at once
}


def _interrupt_when(
    ready: threading.Event, blocked_in: str, interrupt: Callable[[], None]
) -> threading.Thread:
    """A thread that interrupts the main thread once ``ready`` is set and it waits in ``blocked_in``."""

    def watch() -> None:
        if ready.wait(30):
            _wait_until(lambda: _blocked_in(blocked_in))
            interrupt()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("how", list(INTERRUPTS))
def test_ctrl_c_during_run_ends_the_run_first(
    how: str, fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.script([out(E.step_start()), hang()])
    started = threading.Event()

    def on_event(event: Event) -> None:
        started.set()

    watcher = _interrupt_when(started, "_take", INTERRUPTS[how])
    with pytest.raises(KeyboardInterrupt):
        client.run(PROMPT, workspace, on_event=on_event)
    # Raised only once the run (and opencode with it) had ended.
    [call] = fake.calls()
    assert not pid_alive(call["pid"])
    assert not Path(call["env"]["XDG_DATA_HOME"]).exists()
    watcher.join()
    fake.emit(E.simple_turn("usable again"))
    assert client.run(PROMPT, workspace).final_text == "usable again"


@pytest.mark.parametrize("how", list(INTERRUPTS))
def test_ctrl_c_while_waiting_for_the_next_event_ends_the_stream(
    how: str, fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.script([out(E.step_start()), hang()])
    events = client.stream(PROMPT, workspace)
    assert next(events).type == "step_start"
    waiting = threading.Event()
    watcher = _interrupt_when(waiting, "_take", INTERRUPTS[how])
    waiting.set()
    with pytest.raises(KeyboardInterrupt):
        next(events)
    assert not pid_alive(fake.calls()[0]["pid"])
    assert list(events) == []
    watcher.join()


def test_ctrl_c_in_on_event_ends_the_run_first(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.script([out(E.step_start()), out(E.text("one")), hang()])

    def on_event(event: Event) -> None:
        if event.type == "text":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.run(PROMPT, workspace, on_event=on_event)
    assert not pid_alive(fake.calls()[0]["pid"])


def test_ctrl_c_during_run_many_ends_every_task(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.script([out(E.step_start()), hang()])
    started: set[int] = set()
    all_started = threading.Event()

    def on_event(index: int, event: Event) -> None:
        started.add(index)
        if len(started) == 3:
            all_started.set()

    watcher = _interrupt_when(all_started, "_take", _sigint)
    with pytest.raises(KeyboardInterrupt):
        sync.run_many([(PROMPT, workspace)] * 3, client=client, on_event=on_event)
    calls = fake.calls()
    assert len(calls) == 3 and not any(pid_alive(call["pid"]) for call in calls)
    watcher.join()


def test_a_second_ctrl_c_stops_waiting_for_the_clean_up() -> None:
    release = threading.Event()
    ending = threading.Event()

    async def stubborn(call: Call[None]) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ending.set()
            # A clean-up that takes until the test lets it finish.
            await asyncio.get_running_loop().run_in_executor(None, release.wait)

    loop = LoopThread("stubborn", _nothing)
    try:
        call = loop.submit(stubborn)
        ready = threading.Event()
        first = _interrupt_when(ready, "_take", _thread.interrupt_main)
        second = _interrupt_when(ending, "_wait", _thread.interrupt_main)
        ready.set()
        with pytest.raises(KeyboardInterrupt):
            call.result()
        assert ending.is_set() and not call.done  # given up on: the clean-up still runs
        first.join()
        second.join()
    finally:
        release.set()
        loop.close()
    assert call.done


async def _nothing() -> None:
    return None


def test_close_while_another_thread_waits_ends_its_run(
    fake: FakeOpenCode, client: sync.Client, workspace: Path
) -> None:
    fake.script([out(E.step_start()), hang()])
    started = threading.Event()
    raised: list[BaseException] = []

    def in_a_worker() -> None:
        try:
            client.run(PROMPT, workspace, on_event=lambda event: started.set())
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=in_a_worker)
    worker.start()
    assert started.wait(30)
    client.close()
    worker.join()
    assert not pid_alive(fake.calls()[0]["pid"])
    [error] = raised
    assert isinstance(error, OpenCodeCancelledError) and "was closed" in str(error)


EXITING = """
import atexit, json, os, sys, threading


def report():
    # Registered first, so it runs last at exit (atexit is last in, first out): after the exit
    # hook of the client, and before the process supervisor could notice that we are gone.
    with open(os.path.join(os.path.dirname(sys.argv[1]), "calls.jsonl"), encoding="utf-8") as fh:
        pid = json.loads(fh.readline())["pid"]
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        alive = stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"
    except OSError:
        alive = False
    print("opencode alive at exit:", alive, flush=True)


atexit.register(report)

from opencode_wrapper import sync

client = sync.Client(sys.argv[1], startup_delay_s=0)
started = threading.Event()
threading.Thread(
    target=lambda: client.run("Say hello", sys.argv[2], on_event=lambda event: started.set()), daemon=True
).start()
assert started.wait(60)
print("exiting", flush=True)
"""


def test_the_interpreter_exit_ends_a_running_run(fake: FakeOpenCode, workspace: Path, tmp_path: Path) -> None:
    fake.script([out(E.step_start()), hang()])
    script = tmp_path / "exiting.py"
    script.write_text(EXITING, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(fake.path), str(workspace)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exiting", "opencode alive at exit: False"], done.stderr
    [call] = fake.calls()
    assert not pid_alive(call["pid"])


def test_a_real_ctrl_c_to_a_program_using_sync_run(
    fake: FakeOpenCode, workspace: Path, tmp_path: Path
) -> None:
    fake.script([out(E.step_start()), hang()])
    script = tmp_path / "interrupted.py"
    script.write_text(
        "import sys\nfrom opencode_wrapper import sync\n"
        "sync.Client(sys.argv[1], startup_delay_s=0).run('Say hello', sys.argv[2], "
        "on_event=lambda event: print('started', flush=True))\n",
        encoding="utf-8",
    )
    with subprocess.Popen(
        [sys.executable, str(script), str(fake.path), str(workspace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as program:
        try:
            assert program.stdout is not None and program.stdout.readline() == "started\n"
            program.send_signal(signal.SIGINT)
            _, stderr = program.communicate(timeout=60)
        finally:
            if program.poll() is None:
                program.kill()
    assert program.returncode == -signal.SIGINT  # Python's exit for an unhandled KeyboardInterrupt
    assert "KeyboardInterrupt" in stderr
    [call] = fake.calls()
    assert not pid_alive(call["pid"])
