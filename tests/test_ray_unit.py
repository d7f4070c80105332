"""The Ray engine without a cluster: routing, retries only for lost nodes, ray.cancel on every stop,
argument checks, and the import guarantees (``import opencode_wrapper`` never imports Ray; without
Ray, ``opencode_wrapper.ray`` says how to install it).

The handle is driven by fake node agents whose ``run`` stream plays a script: an item tuple is
sent, an ``asyncio.Event`` is a gate it waits at, an exception is raised as Ray would raise it.
``ray.cancel`` is replaced by a recorder that ends the fake stream the way Ray does (its next item
raises ``TaskCancelledError``), after the fake's own clean-up.
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
import ray.exceptions

from fakes import events as E
from opencode_wrapper._model.event import as_event
from opencode_wrapper._ray import handle as handle_module
from opencode_wrapper._ray.engine import RayEngine
from opencode_wrapper._ray.handle import RayRun
from opencode_wrapper._ray.router import AgentSlot, Router
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.batch import Budget, Task, run_many
from opencode_wrapper.errors import OpenCodeConfigError, OpenCodeError
from opencode_wrapper.results import RunError, RunResult

pytestmark = pytest.mark.ray

Step = tuple[Any, ...] | asyncio.Event | BaseException


class FakeStream:
    """What ``actor.run.options(num_returns="streaming").remote(request)`` returns, scripted."""

    def __init__(self, script: list[Step]) -> None:
        self.script = list(script)
        self.cancelled = False
        self.cleaned_up = False
        self._wake = asyncio.Event()

    def cancel(self) -> None:
        self.cancelled = True
        self._wake.set()

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> Awaitable[Any]:
        while True:
            if self.cancelled:
                if not self.cleaned_up:
                    await asyncio.sleep(0)  # the remote run's clean-up takes a moment
                    self.cleaned_up = True
                    return _raising(ray.exceptions.TaskCancelledError())
                raise StopAsyncIteration
            if not self.script:
                raise StopAsyncIteration
            step = self.script[0]
            if isinstance(step, asyncio.Event):
                if step.is_set():
                    self.script.pop(0)
                    continue
                self._wake.clear()
                waiter = asyncio.ensure_future(step.wait())
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({waiter, woken}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                woken.cancel()
                continue
            self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
            return _value(step)


async def _value(item: Any) -> Any:
    return item


async def _raising(exc: BaseException) -> Any:
    raise exc


class FakeAgent:
    """A node agent: each ``run`` call takes the next script."""

    def __init__(self, *scripts: list[Step]) -> None:
        self.scripts = list(scripts)
        self.streams: list[FakeStream] = []
        self.requests: list[RunRequest] = []
        self.run = self

    def options(self, **options: Any) -> FakeAgent:
        assert options == {"num_returns": "streaming"}
        return self

    def remote(self, request: RunRequest) -> FakeStream:
        self.requests.append(request)
        stream = FakeStream(self.scripts.pop(0))
        self.streams.append(stream)
        return stream


@pytest.fixture(autouse=True)
def fake_cancel(monkeypatch: pytest.MonkeyPatch) -> list[FakeStream]:
    cancelled: list[FakeStream] = []

    def cancel(stream: FakeStream) -> None:
        cancelled.append(stream)
        stream.cancel()

    monkeypatch.setattr(handle_module.ray, "cancel", cancel)
    return cancelled


def _events(*events: dict[str, Any]) -> tuple[Any, ...]:
    return ("events", [as_event(e) for e in events])


def _result(text: str, error: RunError | None = None) -> tuple[Any, ...]:
    return ("result", RunResult(final_text=text, error=error), True)


class Engine:
    """The engine side a ``RayRun`` sees: a router of fake agents and a record of losses."""

    def __init__(self, *agents: FakeAgent, capacity: int = 4) -> None:
        self.router = Router()
        for number, agent in enumerate(agents):
            self.router.add(AgentSlot(f"node-{number}", agent, capacity))
        self.lost: list[str] = []

    async def start(self) -> Router:
        return self.router

    async def lose(self, slot: AgentSlot, cause: BaseException | None) -> None:
        if await self.router.lose(slot):
            self.lost.append(slot.node_id)

    def open(self, request: RunRequest, max_attempts: int = 2) -> RayRun:
        return RayRun(request, start=self.start, lose=self.lose, max_attempts=max_attempts)


def _request(tmp_path: Path, **options: Any) -> RunRequest:
    return RunRequest.create("hello", tmp_path, **options)


# ----------------------------------------------------------------------------- runs and retries


async def test_events_pass_through_the_driver_and_the_result_gets_them_back(tmp_path: Path) -> None:
    agent = FakeAgent([_events(E.step_start(), E.text("hi")), _events(E.step_finish()), _result("hi")])
    engine = Engine(agent)
    seen: list[str] = []
    log = tmp_path / "run.jsonl"
    run = engine.open(
        _request(tmp_path, on_event=lambda ev: seen.append(ev.kind), log_file=log, timeout_s=30)
    )
    result = await run.wait()
    assert result.ok and result.final_text == "hi"
    assert [ev.kind for ev in result.events] == ["step_start", "text", "step_finish"] == seen
    assert len(log.read_text().splitlines()) == 3, "the log file is written on the driver"
    assert run.placement == "node-0" and [(a.number, a.node_id, a.error) for a in run.attempts] == [
        (1, "node-0", None)
    ]
    sent = agent.requests[0]
    assert sent.on_event is None and sent.log_file is None and sent.timeout_s is None
    pickle.dumps(sent)  # what crosses the cluster pickles (no callbacks in it)
    assert engine.router.live[0].load == 0, "the session was given back"


async def test_a_lost_node_is_retried_on_another_and_recorded(tmp_path: Path) -> None:
    dying = FakeAgent([_events(E.step_start()), ray.exceptions.ActorDiedError()])
    healthy = FakeAgent([_events(E.step_start(), E.text("done")), _result("done")])
    engine = Engine(dying, healthy)
    seen: list[str] = []
    result = await engine.open(_request(tmp_path, on_event=lambda ev: seen.append(ev.kind))).wait()
    assert result.ok and result.final_text == "done"
    assert [ev.kind for ev in result.events] == ["step_start", "text"], "only the last try's events"
    assert seen == ["step_start", "step_start", "text"], "the live view saw both tries"
    assert engine.lost == ["node-0"]


async def test_a_run_that_failed_on_its_own_is_never_retried(tmp_path: Path) -> None:
    failed = RunError(kind="api_error", message="rate limited", status_code=429)
    first = FakeAgent([_result("", failed)])
    second = FakeAgent()
    engine = Engine(first, second)
    run = engine.open(_request(tmp_path))
    result = await run.wait()
    assert result.error is failed and failed.retryable, "retryable or not, the agent's failure is final"
    assert [(a.number, a.error) for a in run.attempts] == [(1, failed)]
    assert second.requests == [] and engine.lost == []


async def test_losing_every_try_ends_in_a_retryable_server_failure(tmp_path: Path) -> None:
    agents = [FakeAgent([ray.exceptions.ActorUnavailableError("gone", None)]) for _ in range(3)]
    engine = Engine(*agents)
    run = engine.open(_request(tmp_path), max_attempts=2)
    result = await run.wait()
    assert result.error is not None and result.error.kind == "server_failure" and result.error.retryable
    assert "tried 2 times" in result.error.message
    assert [a.node_id for a in run.attempts] == ["node-0", "node-1"]
    assert agents[2].requests == [], "max_attempts bounds the tries"


async def test_no_live_node_left(tmp_path: Path) -> None:
    engine = Engine(FakeAgent([ray.exceptions.NodeDiedError("gone")]))
    run = engine.open(_request(tmp_path), max_attempts=3)
    result = await run.wait()
    assert result.error is not None and result.error.kind == "server_failure"
    assert "no node agent is alive" in result.error.message
    assert [a.node_id for a in run.attempts] == ["node-0", None]


async def test_an_exception_of_the_node_crosses_as_itself(tmp_path: Path) -> None:
    bad = OpenCodeConfigError("workspace '/x' does not exist on node n")
    engine = Engine(FakeAgent([("raise", bad)]))
    run = engine.open(_request(tmp_path))
    with pytest.raises(OpenCodeConfigError, match="does not exist on node"):
        await run.wait()


async def test_an_agent_failing_outside_its_protocol_is_this_run_s_internal_error(tmp_path: Path) -> None:
    crash = ray.exceptions.RayTaskError("run", "Traceback ...", KeyError("boom")).as_instanceof_cause()
    engine = Engine(FakeAgent([crash]), FakeAgent())
    result = await engine.open(_request(tmp_path)).wait()
    assert result.error is not None and result.error.kind == "internal_error"
    assert engine.lost == []


# ----------------------------------------------------------------------------- stopping


@pytest.mark.parametrize("how", ["timeout", "abort", "aclose", "caller_cancelled"])
async def test_every_stop_cancels_the_remote_run_and_waits_for_it(
    tmp_path: Path, fake_cancel: list[FakeStream], how: str
) -> None:
    gate = asyncio.Event()
    agent = FakeAgent([_events(E.step_start(), E.text("partial")), gate, _result("never")])
    engine = Engine(agent)
    got_event = asyncio.Event()
    run = engine.open(
        _request(tmp_path, timeout_s=0.5 if how == "timeout" else None, on_event=lambda ev: got_event.set())
    )
    run.start()
    await got_event.wait()
    if how == "abort":
        result = await run.abort()
    elif how == "aclose":
        await run.aclose()
        result = run.result
    elif how == "caller_cancelled":
        waiter = asyncio.ensure_future(run.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        result = run.result
    else:
        result = await run.wait()
    stream = agent.streams[0]
    assert fake_cancel == [stream], "ray.cancel was called on the remote generator"
    assert stream.cleaned_up, "the handle waited until the remote run had ended"
    expected = {
        "timeout": "timeout",
        "abort": "aborted",
        "aclose": "aborted",
        "caller_cancelled": "cancelled",
    }
    assert result.error is not None and result.error.kind == expected[how]
    assert [ev.kind for ev in result.events] == ["step_start", "text"], "the partial result is the driver's"
    assert [(a.node_id, a.error) for a in run.attempts] == [("node-0", result.error)]
    assert engine.router.live[0].load == 0 and engine.lost == []


async def test_a_budget_stop_in_run_many_cancels_the_remote_runs(
    tmp_path: Path, fake_cancel: list[FakeStream]
) -> None:
    class FakeEngine(RayEngine):
        def __init__(self, agent: FakeAgent) -> None:
            super().__init__()
            self.fake = Engine(agent)

        def _handle(self, request: RunRequest) -> RayRun:
            return self.fake.open(request)

    gate = asyncio.Event()
    costly = _result("paid")
    costly[1].token_usage.total = 10
    agent = FakeAgent(
        [costly],
        [_events(E.step_start()), gate, _result("never")],
        [_events(E.step_start()), gate, _result("never")],
    )
    outcomes = await run_many(
        [Task("p", tmp_path, name=str(i)) for i in range(3)],
        engine=FakeEngine(agent),
        concurrency=3,
        budget=Budget(max_tokens=5, abort_running=True),
    )
    assert outcomes[0].ok
    assert [o.error.kind for o in outcomes[1:] if o.error is not None] == ["budget_exhausted"] * 2
    assert sorted(map(id, fake_cancel)) == sorted(map(id, agent.streams[1:]))
    assert all(stream.cleaned_up for stream in agent.streams[1:])
    assert [o.node_id for o in outcomes] == ["node-0"] * 3


# ----------------------------------------------------------------------------- routing


async def test_router_fills_the_agent_with_most_free_sessions_and_waits_when_full() -> None:
    router = Router()
    a, b = AgentSlot("a", None, 2), AgentSlot("b", None, 3)
    router.add(a)
    router.add(b)
    assert router.capacity == 5
    picked = [await router.acquire() for _ in range(5)]
    assert [s.node_id for s in picked if s is not None] == ["b", "a", "b", "a", "b"], "ties: the first"
    waiting = asyncio.ensure_future(router.acquire())
    await asyncio.sleep(0)
    assert not waiting.done(), "every agent is full"
    await router.release(b)
    assert await waiting is b
    assert await router.lose(a) and not await router.lose(a)
    assert router.capacity == 3 and router.live == [b]


async def test_router_answers_none_once_every_agent_is_lost() -> None:
    router = Router()
    only = AgentSlot("a", None, 1)
    router.add(only)
    assert await router.acquire() is only
    waiting = asyncio.ensure_future(router.acquire())
    await asyncio.sleep(0)
    await router.lose(only)
    assert await waiting is None


# ----------------------------------------------------------------------------- the engine's arguments


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"address": ""}, "address must be"),
        ({"sessions_per_node": 0}, "sessions_per_node must be"),
        ({"servers_per_node": True}, "servers_per_node must be"),
        ({"max_attempts": 0}, "max_attempts must be"),
        ({"setup": "git clone"}, "setup must be a callable"),
        ({"binary": ""}, "binary must be"),
        ({"node_ids": "abc"}, "node_ids must be"),
        ({"runtime_env": ["x"]}, "runtime_env must be"),
        ({"init_options": 3}, "init_options must be"),
        ({"start_timeout_s": float("nan")}, "start_timeout_s must be"),
    ],
)
def test_bad_engine_arguments_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OpenCodeConfigError, match=message):
        RayEngine(**options)


async def test_callbacks_cannot_cross_the_cluster(tmp_path: Path) -> None:
    async def allow(request: Any) -> str:
        return "once"

    engine = RayEngine()
    with pytest.raises(OpenCodeConfigError, match="on_permission cannot be honoured by the ray backend"):
        engine.open(_request(tmp_path, on_permission=allow))
    with pytest.raises(OpenCodeConfigError, match="cli_kwargs"):
        engine.open(RunRequest.create("x", tmp_path, run_cfg=_cfg(cli_kwargs={"title": "t"})))
    await engine.aclose()
    with pytest.raises(OpenCodeError, match="closed"):
        engine.open(_request(tmp_path))


def _cfg(**fields: Any) -> Any:
    from opencode_wrapper.config import RunConfig

    return RunConfig(**fields)


def test_setup_means_workspaces_live_on_the_nodes(tmp_path: Path) -> None:
    assert RayEngine().local_workspaces is True
    assert RayEngine(setup=lambda request: None).local_workspaces is False


def test_plan_sizes_each_node_from_its_resources() -> None:
    nodes = [
        {"NodeID": "big", "Alive": True, "Resources": {"CPU": 8.0, "memory": 4.5e9}},
        {"NodeID": "small", "Alive": True, "Resources": {"CPU": 1.0, "memory": 0.5e9}},
        {"NodeID": "dead", "Alive": False, "Resources": {"CPU": 4.0, "memory": 8e9}},
    ]
    plans = {p.node_id: p for p in RayEngine()._plan(nodes)}
    assert set(plans) == {"big", "small"}
    assert (plans["big"].servers, plans["big"].sessions, plans["big"].memory) == (4, 32, 4_000_000_000)
    assert (plans["small"].servers, plans["small"].memory) == (1, 500_000_000), "never more than it has"
    fixed = RayEngine(sessions_per_node=3, servers_per_node=2, node_ids=["small"])._plan(nodes)
    assert [(p.node_id, p.servers, p.sessions) for p in fixed] == [("small", 2, 3)]
    with pytest.raises(OpenCodeConfigError, match=r"node_ids \['dead'\] are not alive"):
        RayEngine(node_ids=["dead"])._plan(nodes)


def test_the_agents_keep_their_children_whatever_runtime_env_is_given() -> None:
    engine = RayEngine(
        runtime_env={"env_vars": {"A": "1", "RAY_kill_child_processes_on_worker_exit": "true"}}
    )
    assert engine._runtime_env["env_vars"] == {"A": "1", "RAY_kill_child_processes_on_worker_exit": "false"}


# ----------------------------------------------------------------------------- imports

_NO_RAY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray' (blocked by the test)")
sys.meta_path.insert(0, Block())
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_import_opencode_wrapper_never_imports_ray() -> None:
    done = _python(
        "import sys, opencode_wrapper, opencode_wrapper.batch, opencode_wrapper.__main__\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_ray_the_module_says_how_to_install_it() -> None:
    done = _python(
        _NO_RAY
        + "from opencode_wrapper.errors import OpenCodeConfigError\n"
        + "try:\n    import opencode_wrapper.ray\nexcept OpenCodeConfigError as exc:\n    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'py-opencode-wrapper[ray]'" in done.stdout


async def test_a_start_that_fails_closes_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from opencode_wrapper._ray import engine as engine_module

    monkeypatch.setattr(engine_module.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(engine_module.ray, "nodes", lambda: [{"NodeID": "a", "Alive": True, "Resources": {}}])
    made = RayEngine(node_ids=["b"])
    with pytest.raises(OpenCodeConfigError, match=r"node_ids \['b'\] are not alive nodes"):
        async with made:
            pass
    with pytest.raises(OpenCodeError, match="closed"):
        await made.start()
