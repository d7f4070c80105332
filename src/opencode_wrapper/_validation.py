"""Checks of call arguments, shared by every entry point; all raise ``OpenCodeConfigError``."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

from opencode_wrapper.errors import OpenCodeConfigError


def check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str):
        raise OpenCodeConfigError(f"prompt must be a str, got {type(prompt).__name__} {prompt!r:.80}")
    if not prompt.strip():
        raise OpenCodeConfigError(f"prompt must contain some text, got {prompt!r:.80}")
    return prompt


def check_workspace(workspace: object, *, must_exist: bool = True) -> str:
    """Return the absolute, resolved workspace path; it must be an existing directory.

    ``must_exist=False``: only the type is checked and the path made absolute (a workspace that
    is made on a remote node, e.g. by a cluster backend's set-up).
    """
    if not isinstance(workspace, (str, os.PathLike)):
        raise OpenCodeConfigError(
            f"workspace must be a path (str or os.PathLike), got {type(workspace).__name__} {workspace!r}"
        )
    path = Path(os.fspath(workspace)).expanduser()
    if not must_exist:
        if not os.fspath(workspace) or "\x00" in os.fspath(path):
            raise OpenCodeConfigError(f"workspace must be a non-empty path, got {workspace!r}")
        return os.path.abspath(path)
    if not path.exists():
        raise OpenCodeConfigError(
            f"workspace {os.fspath(workspace)!r} does not exist; pass an existing directory"
        )
    if not path.is_dir():
        raise OpenCodeConfigError(f"workspace {os.fspath(workspace)!r} is not a directory; pass a directory")
    return str(path.resolve())


def check_timeout(timeout_s: object, name: str = "timeout_s") -> float | None:
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise OpenCodeConfigError(f"{name} must be a positive number of seconds or None, got {timeout_s!r}")
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise OpenCodeConfigError(f"{name} must be a positive number of seconds or None, got {timeout_s!r}")
    return float(timeout_s)


def check_non_negative(value: object, name: str, *, integer: bool = False) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not isinstance(value, kinds)
        or value < 0
        or not math.isfinite(value)
    ):
        what = "a non-negative integer" if integer else "a non-negative number"
        raise OpenCodeConfigError(f"{name} must be {what}, got {value!r}")


def check_type_names(values: Iterable[str] | None, name: str) -> frozenset[str]:
    if values is None:
        return frozenset()
    if isinstance(values, (str, bytes)):
        raise OpenCodeConfigError(
            f"{name} must be a collection of event type strings, not a single string {values!r}"
        )
    items = list(values)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise OpenCodeConfigError(f"{name} must contain event type strings, got {bad[0]!r}")
    return frozenset(items)
