"""The multi-agent demo behind ``opencode-wrapper demo`` (and ``make demo``).

Parallel inspector agents, each using the bash tool in its own service folder of a generated
sample repository, then one agent that summarises their reports; shown with the live view.
``examples/demo.py`` is the same workflow written with the public API only.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from opencode_wrapper._cli.live import make_view
from opencode_wrapper._cli.observe import closing, iter_observed
from opencode_wrapper._cli.output import Output
from opencode_wrapper.batch import BackendName, Task, TaskOutcome
from opencode_wrapper.config import RunConfig
from opencode_wrapper.events import TokenUsage
from opencode_wrapper.testing import Match, OfflineModelServer, RecordedRequest, Reply

SERVICES = {
    "api": [
        "def get_user(uid):\n    # TODO: cache lookups\n    return {'id': uid}\n",
        "ROUTES = ['/users']\n",
    ],
    "worker": ["import time\n\n\ndef run():\n    # TODO: retries\n    # TODO: metrics\n    time.sleep(1)\n"],
    "gateway": [
        "def proxy(req):\n    return req\n",
        "def auth(req):\n    # TODO: real tokens\n    return True\n",
    ],
}

INSPECT_PROMPT = (
    "Inspect the service in the current directory. Use the bash tool to count the lines of its "
    "Python files and the TODO comments in them, then answer with one line: "
    "'<N> lines, <M> TODOs'."
)
INSPECT_COMMAND = "printf '%s lines, %s TODOs\\n' $(cat *.py | wc -l) $(grep -o TODO *.py | wc -l)"
SUMMARY_PROMPT = "Summarise these service reports in one sentence:\n"
TIMEOUT_S = 300.0


def make_sample_repo(root: Path) -> dict[str, Path]:
    """Write a tiny multi-service repository; return each service's folder."""
    folders = {}
    for name, files in SERVICES.items():
        folder = root / "services" / name
        folder.mkdir(parents=True)
        for index, source in enumerate(files):
            (folder / f"module{index}.py").write_text(source, encoding="utf-8")
        folders[name] = folder
    return folders


def summarise_reports(request: RecordedRequest) -> str:
    """The offline model's 'summary': computed from the reports quoted in the prompt."""
    reports = re.findall(r"- (\w+): .*?(\d+) lines, (\d+) TODOs", request.last_user_text)
    lines = sum(int(n) for _, n, _ in reports)
    todos = sum(int(t) for _, _, t in reports)
    busiest = max(reports, key=lambda r: int(r[2]))[0] if reports else "none"
    return f"{len(reports)} services, {lines} lines of Python, {todos} TODOs; most TODOs: {busiest}."


def script_offline_model(model: OfflineModelServer) -> None:
    """Teach the offline model the demo: a bash call per inspector, then the summary."""
    model.add_rule(Match.user_text(r"^Inspect the service"), Reply.bash(INSPECT_COMMAND))
    # After its bash call, an inspector answers with what the command printed.
    model.add_rule(
        Match.tool_result("bash"), Reply.compute(lambda request: request.tool_results[-1].output.strip())
    )
    model.add_rule(Match.user_text(r"^Summarise"), Reply.compute(summarise_reports))


async def _run_tasks(
    out: Output, tasks: list[Task], *, backend: BackendName, binary: str | os.PathLike[str]
) -> list[TaskOutcome]:
    outcomes: list[TaskOutcome] = []
    view = make_view(out, len(tasks))
    async with view:
        stream = iter_observed(tasks, view, backend=backend, concurrency=None, binary=binary)
        async with closing(stream):
            async for outcome in stream:
                view.task_finished(outcome)
                outcomes.append(outcome)
    return sorted(outcomes, key=lambda o: o.index)


def _tools(outcome: TaskOutcome) -> str:
    result = outcome.result
    names = list(result.tools) if result else []
    return ", ".join(names) or "none"


async def run_workflow(
    out: Output, cfg: RunConfig, root: Path, *, backend: BackendName, binary: str | os.PathLike[str]
) -> int:
    """The demo: inspectors in parallel, then the summariser; prints what examples/demo.py prints."""
    folders = make_sample_repo(root)
    started = time.monotonic()
    out.line(f"Inspecting {len(folders)} services in parallel under {root} ...")
    tasks = [
        Task(INSPECT_PROMPT, folder, run_cfg=cfg, timeout_s=TIMEOUT_S, name=name)
        for name, folder in folders.items()
    ]
    outcomes = await _run_tasks(out, tasks, backend=backend, binary=binary)
    usage = TokenUsage()
    cost = 0.0
    reports = []
    for name, outcome in zip(folders, outcomes, strict=True):
        result = outcome.result
        if result is None:
            out.line(f"  [{name}] FAILED: {outcome.error}")
            continue
        usage += result.token_usage
        cost += result.total_cost
        status = "ok" if outcome.ok else f"error: {outcome.error}"
        out.line(f"  [{name}] {result.final_text.strip()}   (tools: {_tools(outcome)}; {status})")
        if outcome.ok:
            reports.append(f"- {name}: {result.final_text.strip()}")
    if not reports:
        out.line("No agent succeeded; nothing to summarise.")
        return 1
    summary_task = Task(
        SUMMARY_PROMPT + "\n".join(reports), root, run_cfg=cfg, timeout_s=TIMEOUT_S, name="summary"
    )
    (summary,) = await _run_tasks(out, [summary_task], backend=backend, binary=binary)
    if summary.result is not None:
        usage += summary.result.token_usage
        cost += summary.result.total_cost
    text = summary.result.final_text.strip() if summary.result is not None else ""
    out.line(f"\nSummary: {text if summary.ok else f'FAILED: {summary.error}'}")
    out.line(
        f"\nTokens: {usage.total} total ({usage.input} in, {usage.output} out, {usage.reasoning} reasoning); "
        f"cost ${cost:.4f}; {len(reports) + 1} agents in {time.monotonic() - started:.1f} s"
    )
    return 0 if len(reports) == len(folders) and summary.ok else 1
