"""``Limits``: per-run ceilings on cost, tokens, model steps and silence.

Crossing one ends the run at once (its turn is aborted on a server; its whole process tree is
ended in run mode), and the result says which limit and the figure that crossed it
(``error.kind == "limit_exceeded"``, or ``"stalled"`` for ``idle_timeout_s``). They work the same
on every backend and next to a batch's :class:`~opencode_wrapper.Budget`, which counts across runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from opencode_wrapper.errors import OpenCodeConfigError

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Ceilings for one run (``None``: no limit).

    Attributes:
        max_cost: the most the run may cost (the provider's figure, as opencode reports it).
        max_tokens: the most tokens (``total`` of every step) the run may use.
        max_steps: the most model steps (model calls); the run ends when one more starts.
        idle_timeout_s: end the run as ``stalled`` when no event came for this long (a tool that
            prints nothing counts as silence: choose a value above your longest quiet tool).
    """

    max_cost: float | None = None
    max_tokens: int | None = None
    max_steps: int | None = None
    idle_timeout_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_cost", "idle_timeout_s"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise OpenCodeConfigError(f"Limits.{name} must be a positive number or None, got {value!r}")
        for name in ("max_tokens", "max_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OpenCodeConfigError(f"Limits.{name} must be an integer >= 1 or None, got {value!r}")

    @property
    def empty(self) -> bool:
        """Whether no limit is set."""
        return all(
            getattr(self, name) is None for name in ("max_cost", "max_tokens", "max_steps", "idle_timeout_s")
        )
