"""Which node agent takes the next run: the live one with the most free sessions.

``ray.util.ActorPool`` allows one call in flight per actor; a node agent runs many sessions at
once, so runs are routed here by free capacity instead. Pure asyncio: no Ray in this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AgentSlot", "Router"]


@dataclass(eq=False)
class AgentSlot:
    """One node agent as the driver sees it.

    Attributes:
        node_id: the Ray node it is placed on.
        actor: its actor handle.
        capacity: how many runs it takes at once (its ``sessions_per_node``).
        load: runs routed to it and not yet released.
        alive: ``False`` once it (or its node) was lost; it takes no more runs.
        info: what the agent said about itself when it started (pid, servers...).
    """

    node_id: str
    actor: Any
    capacity: int
    load: int = 0
    alive: bool = True
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.capacity - self.load if self.alive else 0


class Router:
    """Routes runs to agents by free capacity; a run waits while every live agent is full."""

    def __init__(self) -> None:
        self._slots: list[AgentSlot] = []
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        # Made on first use, inside the running loop (the engine may be built outside one).
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    @property
    def slots(self) -> list[AgentSlot]:
        """Every agent, lost ones included, in the order they were added."""
        return list(self._slots)

    @property
    def live(self) -> list[AgentSlot]:
        return [slot for slot in self._slots if slot.alive]

    @property
    def capacity(self) -> int:
        """Runs the live agents take at once."""
        return sum(slot.capacity for slot in self.live)

    def add(self, slot: AgentSlot) -> None:
        self._slots.append(slot)

    async def acquire(self) -> AgentSlot | None:
        """Reserve a session on the live agent with the most free ones (the first of equals).

        Waits while all live agents are full; ``None`` once no agent is alive.
        """
        changed = self._condition()
        async with changed:
            while True:
                live = self.live
                if not live:
                    return None
                best = max(live, key=lambda slot: slot.free)
                if best.free > 0:
                    best.load += 1
                    return best
                await changed.wait()

    async def release(self, slot: AgentSlot) -> None:
        """Give back a session reserved by :meth:`acquire`."""
        changed = self._condition()
        async with changed:
            slot.load -= 1
            changed.notify_all()

    async def lose(self, slot: AgentSlot) -> bool:
        """Mark ``slot`` lost (it takes no more runs); ``True`` if this call was the first to."""
        changed = self._condition()
        async with changed:
            first = slot.alive
            slot.alive = False
            changed.notify_all()
            return first
