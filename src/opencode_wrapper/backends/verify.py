"""Verification: a check run after the agent, in its workspace (or isolated worktree), before that goes.

``verify="pytest -q"`` runs the command with ``bash -c`` in the workspace, under the process
supervisor (its whole tree is ended on timeout or cancellation), and passes when it exits 0. A
callable ``verify(check) -> bool | str | None`` gets a :class:`VerifyContext`: ``True``/``None``
pass, ``False`` fails, a string fails with that reason. Only a run that succeeded is verified;
a failed verification makes the result's error ``verification_failed`` (not retryable: running the
agent again is your decision).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opencode_wrapper._aio import finish, wait_within
from opencode_wrapper._model.outcome import RunResult
from opencode_wrapper._model.run_error import Verification
from opencode_wrapper._proc.process import OwnedProcess, drain_text
from opencode_wrapper.errors import OpenCodeConfigError

__all__ = [
    "DEFAULT_VERIFY_TIMEOUT_S",
    "Verification",
    "VerifyContext",
    "VerifySpec",
    "check_verify",
    "run_verify",
]

#: How long a verification may take unless ``verify_timeout_s`` says otherwise.
DEFAULT_VERIFY_TIMEOUT_S = 600.0
# The output kept of a verification command (its tail).
_OUTPUT_LIMIT = 20_000


@dataclass(frozen=True)
class VerifyContext:
    """What a verification callable is given.

    Attributes:
        result: the run's result (it succeeded).
        workspace: where the agent worked (the isolated worktree or copy, if the run was isolated).
        name: the run's (task's) name, if it has one.
    """

    result: RunResult
    workspace: str
    name: str | None = None


VerifyCallable = Callable[[VerifyContext], "Awaitable[bool | str | None] | bool | str | None"]
#: A shell command, or a callable (see the module docstring).
VerifySpec = str | VerifyCallable


def check_verify(verify: object) -> None:
    """Refuse anything but ``None``, a non-empty command string, or a callable."""
    if verify is None or callable(verify):
        return
    if isinstance(verify, str) and verify.strip() and "\x00" not in verify:
        return
    raise OpenCodeConfigError(
        "verify must be a shell command (a non-empty str), a callable taking a VerifyContext, or None; "
        f"got {verify!r}"
    )


async def run_verify(
    verify: VerifySpec, context: VerifyContext, *, timeout_s: float | None, env: dict[str, str] | None = None
) -> Verification:
    """Run ``verify``; never raises for a failing check (a cancellation still propagates)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    if isinstance(verify, str):
        verification = await _run_command(verify, context.workspace, timeout_s, env)
    else:
        verification = await _run_callable(verify, context, timeout_s)
    verification.elapsed_s = loop.time() - started
    return verification


async def _run_callable(
    verify: VerifyCallable, context: VerifyContext, timeout_s: float | None
) -> Verification:
    try:
        answer = verify(context)
        if inspect.isawaitable(answer):
            answer = await wait_within(answer, timeout_s)
    except asyncio.TimeoutError:
        return Verification(
            False, f"the verify callable did not answer within verify_timeout_s={timeout_s!r}"
        )
    except Exception as exc:
        return Verification(False, f"the verify callable raised {type(exc).__name__}: {exc}")
    if answer is None or answer is True:
        return Verification(True)
    if isinstance(answer, str):
        return Verification(False, answer)
    passed = bool(answer)
    return Verification(passed, "" if passed else "the verify callable said False")


async def _run_command(
    command: str, workspace: str, timeout_s: float | None, env: dict[str, str] | None
) -> Verification:
    proc = await OwnedProcess.start(
        ["bash", "-c", command],
        cwd=workspace,
        env={**(env or os.environ), "PWD": workspace},
        stdin_data=None,
    )
    chunks: list[str] = []
    readers = [
        asyncio.ensure_future(drain_text(proc.stdout, chunks)),
        asyncio.ensure_future(drain_text(proc.stderr, chunks)),
    ]
    try:
        code = await wait_within(proc.wait(), timeout_s)
        await asyncio.gather(*readers)
    except asyncio.TimeoutError:
        await finish(proc.end())
        return Verification(False, _tail(chunks) + f"\n[verify timed out after {timeout_s!r} s]", None)
    finally:
        await finish(proc.end())
        for reader in readers:
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*readers, return_exceptions=True)
    return Verification(code == 0, _tail(chunks), code)


def _tail(chunks: list[str]) -> str:
    text = "".join(chunks)
    return text[-_OUTPUT_LIMIT:]
