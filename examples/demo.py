"""A small multi-agent workflow: parallel inspectors, then one summariser.

    python examples/demo.py                          # offline scripted model (no key needed)
    python examples/demo.py --model anthropic/claude-sonnet-4-5   # a real provider

Each inspector agent works in its own service folder of a generated sample repository and
uses the bash tool to measure it; a final agent summarises their reports.

It uses only the public API. `opencode-wrapper demo` runs the same workflow in the live view.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

from opencode_wrapper import AsyncOpenCodeClient, OpenCodeError, RunConfig, RunResult, TokenUsage
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
    model.add_rule(Match.user_text(r"^Inspect the service"), Reply.bash(INSPECT_COMMAND))
    # After its bash call, an inspector answers with what the command printed.
    model.add_rule(
        Match.tool_result("bash"), Reply.compute(lambda request: request.tool_results[-1].output.strip())
    )
    model.add_rule(Match.user_text(r"^Summarise"), Reply.compute(summarise_reports))


async def run_workflow(client: AsyncOpenCodeClient, cfg: RunConfig, root: Path) -> int:
    folders = make_sample_repo(root)
    started = time.monotonic()
    print(f"Inspecting {len(folders)} services in parallel under {root} ...")
    results = await asyncio.gather(
        *[
            client.async_run(INSPECT_PROMPT, folder, run_cfg=cfg, timeout_s=300)
            for folder in folders.values()
        ],
        return_exceptions=True,
    )
    usage = TokenUsage()
    cost = 0.0
    reports = []
    for name, result in zip(folders, results, strict=True):
        if isinstance(result, BaseException):
            print(f"  [{name}] FAILED: {result}")
            continue
        assert isinstance(result, RunResult)
        usage += result.token_usage
        cost += result.total_cost
        tools = ", ".join(result.tools) or "none"
        status = "ok" if result.ok else f"error: {result.error}"
        print(f"  [{name}] {result.final_text.strip()}   (tools: {tools}; {status})")
        reports.append(f"- {name}: {result.final_text.strip()}")
    if not reports:
        print("No agent succeeded; nothing to summarise.")
        return 1
    prompt = "Summarise these service reports in one sentence:\n" + "\n".join(reports)
    summary = await client.async_run(prompt, root, run_cfg=cfg, timeout_s=300)
    usage += summary.token_usage
    cost += summary.total_cost
    print(f"\nSummary: {summary.final_text.strip()}")
    print(
        f"\nTokens: {usage.total} total ({usage.input} in, {usage.output} out, {usage.reasoning} reasoning); "
        f"cost ${cost:.4f}; {len(reports) + 1} agents in {time.monotonic() - started:.1f} s"
    )
    return 0 if len(reports) == len(folders) and summary.ok else 1


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="provider/model to use instead of the offline scripted model")
    args = parser.parse_args(argv)
    client = AsyncOpenCodeClient()
    try:
        client.resolved_binary()
    except OpenCodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="opencode-demo-") as tmp:
        root = Path(tmp)
        try:
            if args.model:
                return await run_workflow(client, RunConfig(model=args.model), root)
            with OfflineModelServer() as model:
                script_offline_model(model)
                return await run_workflow(client, model.run_config(), root)
        except OpenCodeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
