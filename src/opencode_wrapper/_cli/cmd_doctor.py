"""``opencode-wrapper doctor``: is everything in place? Each failed check says what to do."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opencode_wrapper._cli.common import EXIT_FAILED, EXIT_OK, add_binary_option, run_async
from opencode_wrapper._cli.output import Output
from opencode_wrapper._jsonc import loads_jsonc
from opencode_wrapper._proc.binary import (
    OPENCODE_VERSION,
    TESTED_VERSION_MAX,
    TESTED_VERSION_MIN,
    binary_version,
    resolve_binary,
)
from opencode_wrapper.errors import OpenCodeError

DESCRIPTION = """\
Check the set-up: the opencode binary (found, and a version in the tested range), npm (needed
by install-opencode), your opencode provider configuration (readable), and a smoke run of the
real opencode on the bundled offline model. Each problem comes with advice.
Exit status: 0 when nothing failed (warnings allowed), 1 otherwise.
"""

SMOKE_TIMEOUT_S = 180.0
_SMOKE_MARK = "doctor-smoke-ok"
_CONFIG_NAMES = ("config.json", "opencode.json", "opencode.jsonc")


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail" | "skip"
    detail: str
    advice: str = ""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "doctor",
        help="check the opencode binary, npm, provider config and a smoke run",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--no-smoke", action="store_true", help="skip the smoke run (a few seconds)")
    add_binary_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return run_async(lambda: _doctor(args))


def _fmt(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def check_binary(binary: str) -> tuple[Check, str | None]:
    source = "OPENCODE_BINARY" if binary == "opencode" and os.environ.get("OPENCODE_BINARY") else None
    try:
        path = resolve_binary(binary)
    except OpenCodeError as exc:
        advice = (
            "Run `opencode-wrapper install-opencode`, or point OPENCODE_BINARY (or --binary) at an "
            "opencode executable."
        )
        if source:
            advice = (
                f"OPENCODE_BINARY={os.environ['OPENCODE_BINARY']} is unusable: fix or unset it. " + advice
            )
        return Check("opencode binary", "fail", str(exc).split(". Install")[0], advice), None
    shown = f"{path}" + (" (from OPENCODE_BINARY)" if source else "")
    return Check("opencode binary", "ok", shown), path


def check_version(path: str) -> Check:
    try:
        version = binary_version(path)
    except OpenCodeError as exc:
        hint = " (set by OPENCODE_BINARY)" if os.environ.get("OPENCODE_BINARY") else ""
        return Check(
            "opencode version",
            "fail",
            str(exc).split(". Install")[0],
            f"{path}{hint} is not an opencode executable. Install the tested release with "
            f"`opencode-wrapper install-opencode` and point OPENCODE_BINARY at it (or unset it).",
        )
    low, high = _fmt(TESTED_VERSION_MIN), _fmt(TESTED_VERSION_MAX)
    if not TESTED_VERSION_MIN <= version < TESTED_VERSION_MAX:
        return Check(
            "opencode version",
            "warn",
            f"{_fmt(version)}, outside the tested range [{low}, {high})",
            f"Event shapes may differ. Install the tested release: `opencode-wrapper install-opencode` "
            f"(opencode-ai@{OPENCODE_VERSION}).",
        )
    return Check("opencode version", "ok", f"{_fmt(version)} (tested: [{low}, {high}))")


def check_npm(binary_ok: bool) -> Check:
    npm = shutil.which("npm")
    advice = "Install Node.js (it ships npm): https://nodejs.org/ or your package manager."
    if npm is None:
        return Check(
            "npm",
            "warn" if binary_ok else "fail",
            "not found on PATH (needed only by install-opencode)",
            advice,
        )
    try:
        completed = subprocess.run(
            [npm, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("npm", "warn", f"{npm} did not answer --version ({exc})", advice)
    return Check("npm", "ok", f"{completed.stdout.strip() or '?'} at {npm}")


def _config_dirs() -> list[Path]:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    home = Path.home()
    return [(Path(xdg) if xdg else home / ".config") / "opencode", home / ".opencode"]


def _auth_file() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "opencode" / "auth.json"


def check_provider_config() -> Check:
    """The user's global opencode config files and credentials: readable, and which providers they set."""
    providers: set[str] = set()
    read: list[str] = []
    for folder in _config_dirs():
        for name in _CONFIG_NAMES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                data = loads_jsonc(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                return Check(
                    "provider config",
                    "fail",
                    f"{path} cannot be read: {exc}",
                    f"Fix the JSON(C) syntax in {path} (opencode refuses to start with it), or move it away.",
                )
            if not isinstance(data, dict):
                return Check(
                    "provider config", "fail", f"{path} is not a JSON object", f"Fix or remove {path}."
                )
            provider = data.get("provider")
            if isinstance(provider, dict):
                providers.update(str(key) for key in provider)
            read.append(str(path))
    auth = _auth_file()
    if auth.is_file():
        try:
            credentials = json.loads(auth.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return Check(
                "provider config",
                "fail",
                f"{auth} cannot be read: {exc}",
                "Run `opencode auth login` again to rewrite your credentials.",
            )
        if isinstance(credentials, dict):
            providers.update(str(key) for key in credentials)
        read.append(str(auth))
    keys = sorted(name for name in os.environ if name.endswith("_API_KEY") and os.environ[name])
    if keys:
        providers.update(f"${name}" for name in keys)
    if not providers:
        where = ", ".join(read) if read else "no config file or credentials"
        return Check(
            "provider config",
            "warn",
            f"no model provider configured ({where})",
            "Only the offline model works. Add credentials with `opencode auth login`, or set a provider's "
            "API key in the environment (e.g. ANTHROPIC_API_KEY), then pass -m provider/model.",
        )
    sources = f" (read {', '.join(read)})" if read else ""
    return Check("provider config", "ok", f"providers: {', '.join(sorted(providers))}{sources}")


async def smoke_run(binary: str) -> Check:
    """One real opencode run on the offline model: a bash tool call and an answer."""
    from opencode_wrapper.client import AsyncOpenCodeClient
    from opencode_wrapper.testing import OfflineModelServer

    client = AsyncOpenCodeClient(binary, startup_delay_s=0)
    with OfflineModelServer() as model, tempfile.TemporaryDirectory(prefix="opencode-doctor-") as workspace:
        try:
            result = await client.async_run(
                f"[[bash: echo {_SMOKE_MARK}]]",
                workspace,
                run_cfg=model.run_config(),
                timeout_s=SMOKE_TIMEOUT_S,
            )
        except OpenCodeError as exc:
            partial = getattr(exc, "result", None)
            stderr = (getattr(partial, "stderr", "") or "").strip().splitlines()[-5:]
            return Check(
                "smoke run",
                "fail",
                f"{type(exc).__name__}: {exc}".strip()[:500],
                "opencode could not finish a run on the offline model"
                + (": its last stderr lines:\n      " + "\n      ".join(stderr) if stderr else ".")
                + "\n    Check that opencode starts (`opencode --version`), that 127.0.0.1 is reachable, "
                "and that the temp dir is writable.",
            )
    if not result.ok or _SMOKE_MARK not in result.final_text:
        return Check(
            "smoke run",
            "fail",
            f"the run did not succeed: {result.error or repr(result.final_text[:200])}",
            "Run `opencode-wrapper run --offline '[[bash: echo hi]]'` to see what opencode does.",
        )
    return Check("smoke run", "ok", "a bash tool call and an answer on the offline model")


_MARKS = {
    "ok": ("ok  ", "green"),
    "warn": ("warn", "yellow"),
    "fail": ("FAIL", "bold red"),
    "skip": ("skip", "dim"),
}


def _show(out: Output, check: Check) -> None:
    from rich.text import Text

    mark, style = _MARKS[check.status]
    out.line(Text.assemble("[", (mark, style), "] ", (f"{check.name:<18}", "bold"), check.detail))
    if check.advice and check.status in ("warn", "fail"):
        out.line(Text.assemble("       -> ", (check.advice, "yellow" if check.status == "warn" else "red")))


async def _doctor(args: argparse.Namespace) -> int:
    import time

    from opencode_wrapper import __version__

    out = Output()
    out.line(
        f"opencode-wrapper {__version__}, Python {platform.python_version()} ({sys.executable}), "
        f"{platform.system()} {platform.machine()}"
    )
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        _show(out, check)

    binary_check, path = check_binary(args.binary)
    add(binary_check)
    version_ok = False
    if path is not None:
        version_check = check_version(path)
        add(version_check)
        version_ok = version_check.status != "fail"
    else:
        add(Check("opencode version", "skip", "no binary"))
    add(check_npm(binary_ok=version_ok))
    add(check_provider_config())
    if args.no_smoke:
        add(Check("smoke run", "skip", "--no-smoke"))
    elif not version_ok:
        add(Check("smoke run", "skip", "no usable opencode binary"))
    else:
        started = time.monotonic()
        smoke = await smoke_run(args.binary)
        if smoke.status == "ok":
            smoke.detail += f" ({time.monotonic() - started:.1f} s)"
        add(smoke)
    failed = [check.name for check in checks if check.status == "fail"]
    if failed:
        out.line(f"\n{len(failed)} check(s) failed: {', '.join(failed)}. Follow the advice above.")
        return EXIT_FAILED
    warned = sum(check.status == "warn" for check in checks)
    out.line("\nAll checks passed" + (f" ({warned} warning(s))." if warned else "."))
    return EXIT_OK
