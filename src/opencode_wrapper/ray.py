"""Run ``run_many`` on a Ray cluster: :class:`RayEngine` (``pip install 'py-opencode-wrapper[ray]'``).

::

    from opencode_wrapper import run_many
    from opencode_wrapper.ray import RayEngine

    async with RayEngine(address="auto", sessions_per_node=16) as engine:
        outcomes = await run_many(tasks, engine=engine, run_cfg=cfg)
    for outcome in outcomes:
        print(outcome.node_id, len(outcome.attempts), outcome.ok)

See :class:`RayEngine` and the guide "Running on a Ray cluster". ``import opencode_wrapper`` never
imports Ray; this module does, and says how to install it when it is missing.
"""

from __future__ import annotations

from opencode_wrapper.errors import OpenCodeConfigError

try:
    import ray  # noqa: F401  (the check; the engine's modules import it too)
except ImportError as exc:  # pragma: no cover - exercised in a venv without ray (tests/test_ray_unit.py)
    raise OpenCodeConfigError(
        "opencode_wrapper.ray needs Ray: pip install 'py-opencode-wrapper[ray]'"
        f" (importing ray failed: {exc})"
    ) from None

from opencode_wrapper._ray.agent import AGENT_RUNTIME_ENV, SetupFunction
from opencode_wrapper._ray.engine import RayEngine

__all__ = ["AGENT_RUNTIME_ENV", "RayEngine", "SetupFunction"]
