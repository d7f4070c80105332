"""What tracing costs a run (no opencode needed): ``watchers_for`` per run, and the watcher per event.

Scenarios, each timed in its own fresh interpreter (the OpenTelemetry global provider can be set
once per process):

* ``no-api``: ``opentelemetry`` cannot be imported (as without the ``tracing`` extra);
* ``no-provider``: the API is installed, no tracer provider is configured;
* ``off``: a provider is configured, ``tracing.configure(enabled=False)``;
* ``unsampled``: an SDK provider whose sampler drops everything (``ALWAYS_OFF``);
* ``traced``: an SDK provider recording every span, exported to an exporter that drops them
  (the cost of building the spans, not of sending them).

For each: the time of one ``watchers_for(request)`` call, and the time to drive its watchers (if
any) through one scripted two-step tool run — the server's 28 events of tests/fakes/activity.py
(bash and read: pending, running, completed/error; two steps; reasoning and text deltas; message
and status updates) — per run and per event, next to what folding the same events into a result
costs (``Fold.add``, which every run pays anyway).

    .venv/bin/python benchmarks/tracing_overhead.py            # 2000 runs per scenario
    .venv/bin/python benchmarks/tracing_overhead.py --runs 500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = ("no-api", "no-provider", "off", "unsampled", "traced")

_CHILD = r"""
import json, sys, time
scenario, runs, workspace = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if scenario == "no-api":
    sys.modules["opentelemetry"] = None
else:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    if scenario != "no-provider":
        provider = TracerProvider(sampler=ALWAYS_OFF) if scenario == "unsampled" else TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)

from opencode_wrapper import tracing
from opencode_wrapper._model.fold import Fold
from opencode_wrapper.backends.request import RunRequest
from opencode_wrapper.backends.watch import watchers_for
from opencode_wrapper.config import RunConfig
from opencode_wrapper.events import as_event
from opencode_wrapper.results import RunResult
from opencode_wrapper.backends.handle import RunHandle
sys.path.insert(0, "tests")
from fakes.activity import server_payloads

class Idle(RunHandle):
    backend = "server"
    def __init__(self, request):
        super().__init__(request)
        self._fold = Fold()
    async def _produce(self):
        return None
    def _partial(self):
        return RunResult()

if scenario == "off":
    tracing.configure(enabled=False)
request = RunRequest.create("List the files.", workspace, run_cfg=RunConfig(model="offline/scripted"))
handle = Idle(request)
events = [as_event(e) for e in server_payloads()]
for ev in events:
    ev.kind  # classified once, as the handle's accumulator does before any watcher sees it
fold = Fold()
for ev in events:
    fold.add(ev)
result = RunResult.from_fold(fold)

def best(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

def open_only():
    for _ in range(runs):
        watchers_for(request)

def drive():
    for _ in range(runs):
        watchers = watchers_for(request)
        for w in watchers:
            w.started(handle)
        for ev in events:
            for w in watchers:
                w.event(handle, ev)
        for w in watchers:
            w.finished(handle, result)

def fold_only():
    for _ in range(runs):
        f = Fold()
        for ev in events:
            f.add(ev)

print(json.dumps({
    "scenario": scenario,
    "watchers": len(watchers_for(request)),
    "watchers_for_us": best(open_only) / runs * 1e6,
    "run_us": best(drive) / runs * 1e6,
    "fold_run_us": best(fold_only) / runs * 1e6,
    "events": len(events),
    "opentelemetry_imported": any(m.startswith("opentelemetry") for m in sys.modules if sys.modules[m]),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="scripted runs per scenario (default 2000)")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    rows = []
    with tempfile.TemporaryDirectory() as workspace:
        for scenario in SCENARIOS:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, scenario, str(args.runs), workspace],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                raise SystemExit(f"scenario {scenario} failed:\n{done.stderr}")
            rows.append(json.loads(done.stdout))
    heads = ("watchers", "watchers_for", "run (28 ev)", "per event", "Fold/run")
    print(f"{'scenario':<12} {heads[0]:>8} {heads[1]:>13} {heads[2]:>12} {heads[3]:>10} {heads[4]:>9}")
    for row in rows:
        extra = row["run_us"] - row["watchers_for_us"]
        print(
            f"{row['scenario']:<12} {row['watchers']:>8} {row['watchers_for_us']:>10.2f} us"
            f" {row['run_us']:>9.1f} us {extra / row['events']:>7.2f} us {row['fold_run_us']:>6.1f} us"
        )


if __name__ == "__main__":
    main()
