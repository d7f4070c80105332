"""Which selected seed tests run, in which group, with which environment: the gate policy.

Some seed tests skip themselves unless an environment switch is set (the selector finds these
*gates* with ``ast``). A skipped test proves nothing, and the harness counts a skip as a failure,
so each gate the seed uses is decided here, once, with the reason:

* a gate the harness can meet honestly is set in the child's environment and the test runs;
* a gate it cannot meet (or one nobody has reviewed yet, e.g. from a newer seed) excludes the test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from seed_harness.selector import UNCONDITIONAL_SKIP, Verdict


@dataclass(frozen=True)
class Gate:
    """The decision for one env switch: the value to set (``None``: cannot be met) and why."""

    value: str | None
    why: str


GATES: Mapping[str, Gate] = {
    "OPENCODE_MULTI_AGENT_WEATHER": Gate(
        None,
        "its 10 agents are asked to look up today's weather of 10 cities (web search allowed) and an "
        "11th to summarise them; offline there is no weather to find, and the offline model would pass "
        "the assertions only by echoing the city names the test itself wrote into its prompts "
        "(measured once with the gate set: passes in ~55 s on 2 cores, for that reason only)",
    ),
}


@dataclass(frozen=True)
class Plan:
    """The verdicts after the gate policy, and the environment the child pytest needs."""

    verdicts: tuple[Verdict, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def unit(self) -> list[Verdict]:
        """Selected tests without the ``integration`` marker (no opencode process)."""
        return [v for v in self.verdicts if v.selected and not v.integration]

    @property
    def integration(self) -> list[Verdict]:
        """Selected ``integration`` tests (real opencode + the offline model)."""
        return [v for v in self.verdicts if v.selected and v.integration]

    @property
    def excluded(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.selected]

    def describe(self) -> str:
        """A readable list of the selection and every exclusion with its reason."""
        lines = [
            f"seed selection: {len(self.unit)} unit + {len(self.integration)} integration test functions "
            f"selected, {len(self.excluded)} excluded"
        ]
        # A module whose every test is out for one reason is one line.
        by_module: dict[str, list[Verdict]] = {}
        for verdict in self.verdicts:
            by_module.setdefault(verdict.nodeid.split("::", 1)[0], []).append(verdict)
        for module, verdicts in by_module.items():
            reasons = {v.reason for v in verdicts}
            if all(not v.selected for v in verdicts) and len(reasons) == 1:
                lines.append(f"  out {module} (all {len(verdicts)} tests): {verdicts[0].reason}")
                continue
            lines += [f"  out {v.nodeid}: {v.reason}" for v in verdicts if not v.selected]
        return "\n".join(lines)


def make_plan(verdicts: Iterable[Verdict], gates: Mapping[str, Gate] = GATES) -> Plan:
    """Apply the gate policy: keep a gated test only when every one of its gates can be met."""
    out: list[Verdict] = []
    env: dict[str, str] = {}
    for verdict in verdicts:
        if not verdict.selected or not verdict.gates:
            out.append(verdict)
            continue
        blockers, needs = [], {}
        for name in verdict.gates:
            gate = gates.get(name)
            if name == UNCONDITIONAL_SKIP:
                blockers.append("it always skips itself")
            elif gate is None:
                blockers.append(f"its skip switch {name} has no reviewed gate policy")
            elif gate.value is None:
                blockers.append(f"gated by {name}, which cannot be met honestly: {gate.why}")
            else:
                needs[name] = gate.value
        if blockers:
            verdict = dataclasses.replace(verdict, selected=False, reason="; ".join(blockers))
        else:
            env.update(needs)
        out.append(verdict)
    return Plan(tuple(out), env)
