"""The plain-text report of a run of the documentation's examples."""

from __future__ import annotations

from collections.abc import Sequence

from .blocks import DocInventory
from .runner import Outcome


def _short(text: str, width: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def render(inventory: DocInventory, outcomes: Sequence[Outcome], wall_s: float, jobs: int) -> str:
    """Every example with its result and time, then what was not run or not checked, then totals."""
    lines = ["Documentation examples", ""]
    width = max((len(o.id) for o in outcomes), default=10)
    for o in outcomes:
        why = "" if o.ok else "  " + _short(o.reason)
        lines.append(f"  {o.id:<{width}}  {o.kind:<7}  {o.status:<8}  {o.seconds:6.1f} s{why}")
    if inventory.not_run:
        lines += ["", "Not run (marked <!-- not-run: ... -->):"]
        lines += [f"  {b.id:<{width}}  {b.kind:<7}  {b.not_run}" for b in inventory.not_run]
    if inventory.not_checked:
        lines += ["", "Not checked:"]
        lines += [f"  {b.id:<{width}}  {b.kind:<7}  {why}" for b, why in inventory.not_checked]
    if inventory.problems:
        lines += ["", "Marker problems:"] + [f"  {p}" for p in inventory.problems]
    passed = sum(o.ok for o in outcomes)
    busy = sum(o.seconds for o in outcomes)
    lines += [
        "",
        f"{passed} passed, {len(outcomes) - passed} failed of {len(outcomes)} examples; "
        f"{len(inventory.not_run)} not run, {len(inventory.not_checked)} not checked; "
        f"{wall_s:.1f} s wall ({busy:.1f} s of examples, {jobs} at a time)",
    ]
    return "\n".join(lines) + "\n"
