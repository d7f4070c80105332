"""Security: loopback-only, authenticated servers; secrets never surface; owner-only files.

* Every server we spawn (``OpenCodeServer``, the seed ``OpenCodeSession``, ``ServerPool`` which
  the warm-server client and ``run_many`` use) listens on 127.0.0.1 only (its listening
  sockets, read from the kernel) and answers 401 to every request without the right
  credentials, including the dangerous ones (``POST /global/dispose``, ``PUT /auth/...``).
* Three secrets go into real runs: the server password, an API key passed through
  ``RunConfig(extra_env=...)`` (the provider reads it as ``{env:...}``), and the key in the
  user's ``auth.json``. The model receiving them proves they were used; then every artefact of the
  runs is scanned for them: results (repr/str, events, raw stdout, stderr), event logs, exceptions
  (a 401, a timeout, a server error), reprs of our objects, Python logging, this process's
  stdout/stderr, the command lines of every process we spawned (world-readable in /proc), and
  every file in our private dirs while the server runs (opencode's log and database included).
* Files and dirs we create (private data dirs, sanitized config copies, event logs) are owner-only
  even under ``umask 000``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from opencode_wrapper import (
    AsyncOpenCodeClient,
    OpenCodeProcessError,
    OpenCodeTimeoutError,
    RunConfig,
)
from opencode_wrapper.batch import Task
from opencode_wrapper.pool import ServerPool
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.session import OpenCodeSession
from opencode_wrapper.testing import OfflineModelServer
from reliability._support import FAST, apoll, scaled, tagged_processes
from reliability.conftest import Reliability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(scaled(240, 600))]

API_SECRET = "sk-extraenv-7f3a9c1e5b2d4f60a8e1"
AUTH_SECRET = "sk-authjson-2b8d0e4f6a1c3e5d7f90"
ROUTES = [
    ("GET", "/session"),
    ("POST", "/session"),
    ("GET", "/session/status"),
    ("GET", "/global/health"),
    ("GET", "/global/event"),
    ("GET", "/event"),
    ("GET", "/doc"),
    ("GET", "/config"),
    ("GET", "/provider"),
    ("PUT", "/auth/offline"),
    ("POST", "/global/dispose"),
]


# ----------------------------------------------------------------------------- loopback + auth


def _listening(server: OpenCodeServer) -> list[str]:
    assert server.pid is not None
    addresses = []
    for proc in [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                addresses.append(conn.laddr.ip)
    return addresses


async def _strangers_refused(server: OpenCodeServer) -> int:
    """Every route, with no / wrong credentials: 401. Returns how many requests were refused."""
    assert server.url is not None and server._password is not None
    password = server._password
    refused = 0
    attempts: list[dict[str, Any]] = [
        {},
        {"auth": ("opencode", "wrong")},
        {"auth": ("intruder", password)},
        {"headers": {"Authorization": f"Bearer {password}"}},
        {"params": {"auth_token": password}},
    ]
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=10) as raw:
        for method, path in ROUTES:
            for extra in attempts:
                response = await raw.request(method, path, **extra)
                assert response.status_code == 401, (method, path, list(extra), response.status_code)
                refused += 1
    return refused


async def test_spawned_servers_are_loopback_only_and_refuse_strangers(
    opencode_binary: str, workspace: Path, offline_model: OfflineModelServer, rel: Reliability
) -> None:
    cfg = offline_model.run_config(config_overrides=FAST)
    found: dict[str, Any] = {}

    async def check(name: str, server: OpenCodeServer) -> None:
        assert server.url is not None and server.url.startswith("http://127.0.0.1:"), server.url
        addresses = _listening(server)
        assert addresses and set(addresses) <= {"127.0.0.1"}, (name, addresses)
        refused = await _strangers_refused(server)
        found[name] = {"listening": sorted(set(addresses)), "refused": refused}

    async with OpenCodeServer(binary=opencode_binary, run_cfg=cfg, cwd=workspace) as server:
        await check("OpenCodeServer", server)
        assert (await server.run("[[say: still mine]]", workspace, timeout_s=120)).ok
    client = AsyncOpenCodeClient(opencode_binary)
    async with OpenCodeSession(client, workspace, run_cfg=cfg) as session:
        assert session.server is not None
        await check("OpenCodeSession", session.server)
    async with ServerPool(binary=opencode_binary, max_servers=1) as pool:
        await pool.run("[[say: pooled]]", workspace, run_cfg=cfg, timeout_s=120)
        await check("ServerPool", pool.servers[0])
    rel.figures.update(
        fault="security: loopback-only, authenticated servers",
        injected=sum(f["refused"] for f in found.values()),
        servers=found,
        left_behind={"unauthenticated_accepted": 0},
        left_total=0,
    )


# ----------------------------------------------------------------------------- secrets


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user home with an ``opencode auth`` credential file (mode 0600, as opencode writes it)."""
    home = tmp_path / "home"
    data = home / ".local" / "share"
    (data / "opencode").mkdir(parents=True)
    auth = data / "opencode" / "auth.json"
    auth.write_text(json.dumps({"authed": {"type": "api", "key": AUTH_SECRET}}), encoding="utf-8")
    auth.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    yield home


def _two_providers(model: OfflineModelServer) -> dict[str, Any]:
    """``authed``: its key comes from auth.json; ``keyed``: from the env var set by extra_env."""

    def provider(options: dict[str, str]) -> dict[str, Any]:
        return {
            "npm": "@ai-sdk/openai-compatible",
            "name": "offline",
            "options": {"baseURL": model.url, **options},
            "models": {"scripted": {"name": "scripted", "tool_call": True}},
        }

    return {
        "provider": {
            "authed": provider({}),
            "keyed": provider({"apiKey": "{env:OCW_TEST_PROVIDER_KEY}"}),
        },
        "share": "disabled",
        **FAST,
    }


def _scan(texts: dict[str, str], secrets: dict[str, str]) -> list[str]:
    return [
        f"{secret_name} in {where}"
        for where, text in texts.items()
        for secret_name, secret in secrets.items()
        if secret in text
    ]


async def test_secrets_never_appear_in_any_artefact(
    opencode_binary: str,
    workspace: Path,
    tmp_path: Path,
    user_home: Path,
    rel: Reliability,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    artefacts: dict[str, str] = {}
    cmdlines: dict[str, str] = {}

    def keep(name: str, value: Any) -> None:
        artefacts[name] = value if isinstance(value, str) else repr(value)

    def note_cmdlines() -> None:
        for proc in tagged_processes(rel.tag):
            with contextlib.suppress(psutil.Error):
                cmdlines[f"cmdline of {proc.pid}"] = " ".join(proc.cmdline())

    with OfflineModelServer() as model:
        overrides = _two_providers(model)
        base = RunConfig(
            config_overrides=overrides,
            extra_env={"OCW_TEST_PROVIDER_KEY": API_SECRET},
            permission={"bash": "allow"},
        )
        authed = RunConfig(model="authed/scripted")
        client = AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)
        run_log = tmp_path / "run.jsonl"

        async def run(model_name: str, prompt: str, **kw: Any) -> Any:
            cfg = base.merged_with(RunConfig(model=model_name))
            try:
                return await client.async_run(prompt, workspace, run_cfg=cfg, **kw)
            except (OpenCodeProcessError, OpenCodeTimeoutError) as exc:
                return exc

        watcher = asyncio.ensure_future(_watch(note_cmdlines))
        try:
            # Three runs at once: the extra_env key (with a tool and an event log), the auth.json
            # key (refused with a 401: an exception and opencode's error), a timeout.
            keyed, authed_401, timed_out = await asyncio.gather(
                run("keyed/scripted", "[[bash: echo keyed]]", log_file=run_log, timeout_s=300),
                run("authed/scripted", "[[error: 401]]", timeout_s=300),
                run("keyed/scripted", "[[hang]]", timeout_s=20),
            )
            results = {"run keyed": keyed, "run 401": authed_401, "run timeout": timed_out}
            session_log = tmp_path / "session.jsonl"
            server_cfg = base.merged_with(RunConfig(model="keyed/scripted"))
            async with OpenCodeServer(binary=opencode_binary, run_cfg=server_cfg, cwd=workspace) as server:
                password = server._password
                assert password
                async with server.session(workspace, log_file=session_log) as session:
                    results["turn keyed"] = await session.send("[[bash: echo session]]", timeout_s=120)
                    results["turn authed"] = await session.send(
                        "[[say: authed turn]]", run_cfg=authed, timeout_s=120
                    )
                    try:  # send() raises for a provider error; the result rides along
                        await session.send("[[error: 401]]", timeout_s=120)
                    except OpenCodeProcessError as exc:
                        results["turn 401"] = exc
                    try:
                        await session.send("[[hang]]", timeout_s=2)
                    except OpenCodeTimeoutError as exc:
                        results["turn timeout"] = exc
                    keep("repr(session)", session)
                try:
                    await server.run("[[error: 401]]", workspace, timeout_s=120)
                except OpenCodeProcessError as exc:
                    results["server.run 401"] = exc
                keep("repr(server)", server)
                keep("server.stderr_tail", server.stderr_tail)
                # opencode's own files in our private dirs (its log, database...), while they exist.
                for path in rel.temp_root.rglob("*"):
                    if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 * 2**20:
                        keep(f"file {path.relative_to(rel.temp_root)}", path.read_bytes().decode("latin-1"))
        finally:
            watcher.cancel()
        requests = list(model.chat_requests)

    # Positive controls: each secret really reached the provider, so its absence below means something.
    used = " ".join(r.headers.get("authorization", "") for r in requests)
    assert f"Bearer {API_SECRET}" in used, "the extra_env key did not reach the provider"
    assert f"Bearer {AUTH_SECRET}" in used, "the auth.json key did not reach the provider"
    assert isinstance(results["run 401"], OpenCodeProcessError)
    assert isinstance(results["run timeout"], OpenCodeTimeoutError)
    assert isinstance(results["server.run 401"], OpenCodeProcessError)

    for name, value in results.items():
        keep(f"repr({name})", value)
        keep(f"str({name})", str(value))
        result = getattr(value, "result", value)
        if result is not None:
            keep(f"{name}: result", result)
            keep(f"{name}: error", str(result.error))
            keep(f"{name}: events", json.dumps(result.events))
            keep(f"{name}: raw stdout", "\n".join(result.raw_stdout_lines))
            keep(f"{name}: stderr", result.stderr)
    keep("run event log", run_log.read_text(encoding="utf-8"))
    keep("session event log", session_log.read_text(encoding="utf-8"))
    keep("python logging", "\n".join(r.getMessage() for r in caplog.records))
    keep("repr(client)", client)
    out, err = capfd.readouterr()
    keep("stdout", out)
    keep("stderr", err)
    artefacts.update(cmdlines)
    secrets = {"password": password, "extra_env key": API_SECRET, "auth.json key": AUTH_SECRET}
    leaks = _scan(artefacts, secrets)
    rel.figures.update(
        fault="security: secrets in artefacts",
        injected=len(artefacts),
        artefacts_scanned=len(artefacts),
        processes_scanned=len(cmdlines),
        left_behind={"leaks": len(leaks)},
        left_total=len(leaks),
        leaks=leaks,
    )
    assert len(cmdlines) >= 4, cmdlines
    assert leaks == []


async def _watch(note: Any) -> None:
    while True:
        note()
        await asyncio.sleep(0.2)


def test_reprs_of_configs_and_batch_outcomes_hide_extra_env_values(tmp_path: Path) -> None:
    from opencode_wrapper.batch import TaskOutcome

    cfg = RunConfig(
        extra_env={"PROVIDER_API_KEY": API_SECRET},
        config_overrides={"provider": {"p": {"options": {"apiKey": API_SECRET, "baseURL": "http://x"}}}},
        mcp={"m": {"type": "remote", "url": "http://y", "headers": {"Authorization": API_SECRET}}},
    )
    outcome = TaskOutcome(index=0, task=Task("x", tmp_path, run_cfg=cfg))
    assert API_SECRET not in repr(cfg)
    assert "PROVIDER_API_KEY" in repr(cfg) and "http://x" in repr(cfg)  # the rest stays readable
    assert API_SECRET not in repr(outcome)


# ----------------------------------------------------------------------------- file modes


async def test_files_we_create_are_owner_only(
    opencode_binary: str, workspace: Path, tmp_path: Path, user_home: Path, rel: Reliability
) -> None:
    # A global config to copy (sanitized) and auth.json to link: the private dirs get content.
    config_dir = user_home / ".config" / "opencode"
    config_dir.mkdir(parents=True)
    (config_dir / "opencode.json").write_text(json.dumps({"provider": {"x": {"options": {"apiKey": "k"}}}}))
    old = os.umask(0)
    try:
        with OfflineModelServer() as model:
            cfg = model.run_config(permission={"bash": "allow"}, config_overrides=FAST)
            marker = rel.marker(0)
            client = AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)
            log = tmp_path / "events.jsonl"
            run = asyncio.ensure_future(
                client.async_run(f"[[bash: {marker}]]", workspace, run_cfg=cfg, log_file=log, timeout_s=300)
            )
            assert await apoll(lambda: tagged_processes(None, [marker]), timeout_s=120)
            ours = sorted(p.name for p in rel.temp_root.iterdir())
            run_loose = [
                x for p in rel.temp_root.iterdir() if p.name.startswith("ocw_") for x in _own_parts(p)
            ]
            log_mode = stat.S_IMODE(log.stat().st_mode)
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            async with OpenCodeServer(binary=opencode_binary, run_cfg=cfg, cwd=workspace) as server:
                session_log = tmp_path / "session.jsonl"
                async with server.session(workspace, log_file=session_log) as session:
                    assert (await session.send("[[say: hi]]", timeout_s=120)).ok
                    server_dirs = sorted(p.name for p in rel.temp_root.iterdir())
                    server_loose = [
                        x for p in rel.temp_root.iterdir() if p.name.startswith("ocw_") for x in _own_parts(p)
                    ]
                    session_log_mode = stat.S_IMODE(session_log.stat().st_mode)
    finally:
        os.umask(old)
    rel.figures.update(
        fault="security: owner-only files (umask 000)",
        injected=len(ours) + len(server_dirs) + 2,
        left_behind={"loose": len(run_loose) + len(server_loose)},
        left_total=len(run_loose) + len(server_loose),
    )
    assert any(n.startswith("ocw_data_") for n in ours) and any(n.startswith("ocw_cfg_") for n in ours), ours
    assert any(n.startswith("ocw_srv_") for n in server_dirs), server_dirs
    assert run_loose == [] and server_loose == [], run_loose + server_loose
    assert log_mode == 0o600 and session_log_mode == 0o600, (oct(log_mode), oct(session_log_mode))


def _own_parts(top: Path) -> list[str]:
    """What we create that group/others could reach: the temp dir itself (0700 makes everything
    inside private, opencode's own files included), the sanitized config copies and their dirs,
    and the credential link's folder."""
    candidates = [top, top / "opencode"]
    if "cfg_" in top.name:
        for base in (top / "xdg", top / "xdg" / "opencode", top / "home", top / "home" / ".opencode"):
            candidates.append(base)
            candidates += [base / name for name in ("config.json", "opencode.json", "opencode.jsonc")]
    loose = []
    for path in candidates:
        if path.exists() and not path.is_symlink() and path.lstat().st_mode & 0o077:
            loose.append(f"{path.relative_to(top.parent)} {stat.filemode(path.lstat().st_mode)}")
    return loose
