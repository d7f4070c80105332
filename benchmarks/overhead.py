"""The wrapper's own overhead: our calls vs the bare opencode they drive (issue 4, "Benchmark").

Two comparisons on the offline model, prompt ``[[bash: echo hi]]`` (one ``bash`` tool call plus
an answer, checked to contain ``bash: hi``), alternated K times (the order flips every round)
so that the load of a shared machine hits both sides alike; medians and the median ratio:

1. **run**: ``await AsyncOpenCodeClient().async_run(PROMPT, ws, run_cfg=cfg)`` vs the bare
   command ``opencode run --format json -m offline/scripted`` with the prompt on stdin, started
   with the same isolation the library uses (a fresh private ``XDG_DATA_HOME`` and
   ``XDG_CONFIG_HOME`` per run, ``OPENCODE_CONFIG_CONTENT`` = the same config JSON,
   ``OPENCODE_DISABLE_AUTOUPDATE=1``, ``PWD`` = the workspace; ``--bare-private-home`` adds the
   library's private ``OPENCODE_TEST_HOME``). Each run gets a fresh
   ``git init``-ed workspace. Target: our run within 5% of the bare command.
2. **turn**: a session turn on the library's server (``OpenCodeServer(run_cfg=cfg)``, then
   ``async with server.session(ws) as s: await s.send(PROMPT)`` — session created, one turn,
   session deleted) vs the same on a bare ``opencode serve`` started by hand with the same
   config over plain httpx (``POST /session``, sync ``POST /session/{id}/message``,
   ``DELETE /session/{id}``). Each server works in its own workspace, warmed up by two turns
   first, so the per-directory set-up is not in the numbers. Target: within 10%.

Times are wall-clock seconds measured in this process. Run it after ``make setup``::

    .venv/bin/python benchmarks/overhead.py               # K = 10
    .venv/bin/python benchmarks/overhead.py --repeat 20 --only turn

Every process it starts is ended by PID before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import _measure as m
import httpx

from opencode_wrapper import AsyncOpenCodeClient, OpenCodeServer, RunConfig
from opencode_wrapper.testing import OfflineModelServer

PROMPT = "[[bash: echo hi]]"
EXPECTED = "bash: hi"
MODEL = "offline/scripted"
TIMEOUT_S = 300.0


def _check(label: str, text: str) -> None:
    if EXPECTED not in text:
        raise RuntimeError(f"{label}: unexpected answer {text[:300]!r}")


async def bare_run(binary: Path, cfg: RunConfig, ws: Path, scratch: Path, *, private_home: bool) -> float:
    """``opencode run --format json -m MODEL`` with the prompt on stdin; the library's isolation.

    With ``private_home`` it also sets ``OPENCODE_TEST_HOME`` to a private home holding an empty
    ``.opencode`` dir, as the library's user-config isolation does.
    """
    root = Path(tempfile.mkdtemp(prefix="bare-run-", dir=scratch))
    env = {k: v for k, v in os.environ.items() if k not in m.USER_CONFIG_ENV}
    for name in ("DATA", "CONFIG"):
        (root / name.lower()).mkdir()
        env[f"XDG_{name}_HOME"] = str(root / name.lower())
    content = cfg.opencode_config_content_json()
    assert content is not None
    env["OPENCODE_CONFIG_CONTENT"] = content
    env["OPENCODE_DISABLE_AUTOUPDATE"] = "1"
    env["PWD"] = str(ws)
    if private_home:
        (root / "home" / ".opencode").mkdir(parents=True)
        env["OPENCODE_TEST_HOME"] = str(root / "home")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "run",
        "--format",
        "json",
        "-m",
        MODEL,
        cwd=ws,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(PROMPT.encode()), TIMEOUT_S)
    finally:
        if proc.returncode is None:
            m.kill_tree(proc.pid)
            await proc.wait()
    elapsed = time.monotonic() - started
    shutil.rmtree(root, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"bare opencode run exited {proc.returncode}: {err.decode(errors='replace')[-1000:]}"
        )
    texts = []
    for line in out.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            ev = json.loads(line)
            if isinstance(ev, dict) and ev.get("type") == "text":
                texts.append(str(ev.get("part", {}).get("text", "")))
    _check("bare run", "\n".join(texts))
    return elapsed


async def our_run(client: AsyncOpenCodeClient, cfg: RunConfig, ws: Path) -> float:
    started = time.monotonic()
    result = await client.async_run(PROMPT, ws, run_cfg=cfg, timeout_s=TIMEOUT_S)
    elapsed = time.monotonic() - started
    if not result.ok:
        raise RuntimeError(f"our run failed: {result.error}")
    _check("our run", result.final_text)
    return elapsed


async def our_turn(server: OpenCodeServer, ws: Path) -> float:
    started = time.monotonic()
    async with server.session(ws, timeout_s=TIMEOUT_S) as session:
        result = await session.send(PROMPT)
    elapsed = time.monotonic() - started
    _check("our turn", result.final_text)
    return elapsed


async def bare_turn(http: httpx.AsyncClient, ws: Path) -> float:
    provider, model_id = MODEL.split("/", 1)
    params = {"directory": str(ws)}
    started = time.monotonic()
    r = await http.post("/session", params=params, json={})
    r.raise_for_status()
    sid = r.json()["id"]
    body = {
        "parts": [{"type": "text", "text": PROMPT}],
        "model": {"providerID": provider, "modelID": model_id},
    }
    r = await http.post(f"/session/{sid}/message", params=params, json=body)
    r.raise_for_status()
    data = r.json()
    (await http.delete(f"/session/{sid}", params=params)).raise_for_status()
    elapsed = time.monotonic() - started
    _check("bare turn", m.message_text(data))
    return elapsed


async def alternate(
    label: str, repeat: int, ours: Callable[[], Awaitable[float]], bare: Callable[[], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    """Run both ``repeat`` times, flipping the order every round; return the two lists of times."""
    a: list[float] = []
    b: list[float] = []
    for i in range(repeat):
        if i % 2 == 0:
            a.append(await ours())
            b.append(await bare())
        else:
            b.append(await bare())
            a.append(await ours())
        m.reap_zombies()  # orphaned ``git`` processes opencode leaves behind re-parent to us
        print(f"  {label} round {i + 1}/{repeat}: ours {a[-1]:.3f} s, bare {b[-1]:.3f} s", file=sys.stderr)
    return a, b


def report(name: str, ours: list[float], bare: list[float], target: float) -> list[str]:
    med_a, med_b = m.median(ours), m.median(bare)
    pair = m.median([x / y for x, y in zip(ours, bare, strict=True)])
    ratio = med_a / med_b
    verdict = "PASS" if ratio <= 1 + target else "FAIL"
    return [
        f"| {name} | {len(ours)} | {med_a:.3f} | {med_b:.3f} | {ratio:.3f} | {pair:.3f}"
        f" | ≤ {1 + target:.2f} | {verdict} |"
    ]


async def amain(args: argparse.Namespace) -> int:
    binary = Path(args.binary) if args.binary else m.default_binary()
    os.environ["OPENCODE_BINARY"] = str(binary)
    machine = m.machine_info()
    print(f"command: {m.command_line()}")
    print(
        f"machine: {machine['cores']} cores ({machine['cpu']}), {machine['ram_gb']} GB RAM, "
        f"{machine['os']}, Python {machine['python']}"
    )
    print(f"load average before: {m.load_str(machine['load'])}")
    sys.stdout.flush()
    lines = [
        "| comparison | K | ours median s | bare median s | ratio of medians | median of ratios"
        " | target | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    scratch = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    counter = iter(range(10**9))
    try:
        async with OfflineModelServer() as model:
            cfg = model.run_config()
            if args.only in ("all", "run"):
                client = AsyncOpenCodeClient()

                def fresh() -> Path:
                    return m.make_workspace(scratch / f"ws{next(counter)}")

                ours, bare = await alternate(
                    "run",
                    args.repeat,
                    lambda: our_run(client, cfg, fresh()),
                    lambda: bare_run(binary, cfg, fresh(), scratch, private_home=args.bare_private_home),
                )
                lines += report("async_run vs bare `opencode run`", ours, bare, 0.05)
            if args.only in ("all", "turn"):
                content = cfg.opencode_config_content_json()
                assert content is not None
                ws_ours, ws_bare = fresh_ws(scratch, "turn-ours"), fresh_ws(scratch, "turn-bare")
                bare_server = m.BareServe(binary, json.loads(content))
                try:
                    bare_server.start()
                    async with (
                        OpenCodeServer(run_cfg=cfg) as server,
                        httpx.AsyncClient(
                            base_url=bare_server.url, auth=bare_server.auth, timeout=TIMEOUT_S
                        ) as http,
                    ):
                        for _ in range(2):  # warm up: per-directory set-up, first-prompt costs
                            await our_turn(server, ws_ours)
                            await bare_turn(http, ws_bare)
                        ours, bare = await alternate(
                            "turn",
                            args.repeat,
                            lambda: our_turn(server, ws_ours),
                            lambda: bare_turn(http, ws_bare),
                        )
                finally:
                    bare_server.stop()
                lines += report("session turn vs bare HTTP prompt", ours, bare, 0.10)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\n".join(["", *lines, "", f"load average after: {m.load_str()}"]))
    left = m.leftover_children(exclude=[])
    if left:
        print("processes left behind (killed): " + "; ".join(m.describe(p) for p in left))
        for p in left:
            m.kill_tree(p.pid, grace_s=2)
        return 1
    return 0


def fresh_ws(scratch: Path, name: str) -> Path:
    return m.make_workspace(scratch / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=10, help="rounds per comparison (default 10)")
    parser.add_argument("--only", choices=("all", "run", "turn"), default="all")
    parser.add_argument(
        "--bare-private-home",
        action="store_true",
        help="give the bare `opencode run` the library's private OPENCODE_TEST_HOME too",
    )
    parser.add_argument("--binary", default=None, help="opencode binary (default $OPENCODE_BINARY / pinned)")
    args = parser.parse_args()
    m.become_subreaper()
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
