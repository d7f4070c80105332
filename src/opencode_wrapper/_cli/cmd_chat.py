"""``opencode-wrapper chat``: a multi-turn session in the terminal, with a human answering requests."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from typing import Any

from opencode_wrapper._cli.chat_view import TurnPrinter
from opencode_wrapper._cli.common import EXIT_FAILED, EXIT_OK, add_agent_options, offline_model, run_async
from opencode_wrapper._cli.human import HumanPrompter, ask
from opencode_wrapper._cli.lines import LineReader
from opencode_wrapper._cli.output import Output
from opencode_wrapper._cli.render import error_line, result_line
from opencode_wrapper._validation import check_workspace
from opencode_wrapper.config import RunConfig
from opencode_wrapper.errors import OpenCodeError
from opencode_wrapper.events import RunError, RunResult

#: Tools whose use the person is asked about unless --permission says otherwise.
ASKED_TOOLS = ("bash", "edit", "webfetch")
EXIT_WORDS = ("/exit", "/quit")

DESCRIPTION = f"""\
An interactive, multi-turn session with an agent in a workspace. The agent's text streams as it
is written; tool calls show their status and output. When the agent wants to use {", ".join(ASKED_TOOLS)}
you are asked first: y (once), a (always, for the rest of the chat), n (no), or type a reason to
refuse (the agent gets it as feedback and continues). When the model asks a question, you pick
an option. --permission TOOL=ACTION changes what is asked (allow, deny or ask).

Type {" or ".join(EXIT_WORDS)} or press Ctrl-D to leave; Ctrl-C stops a running turn (at the
prompt it leaves too).
"""

EXAMPLES = """\
examples:
  opencode-wrapper chat -w ~/project -m anthropic/claude-sonnet-4-5
  opencode-wrapper chat --offline        # try it: type [[bash: ls]], then answer the permission prompt
"""


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "chat",
        help="an interactive session that asks you to approve permissions",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-w", "--workspace", default=".", metavar="DIR", help="the agent's working directory (default .)"
    )
    parser.add_argument("--timeout", type=float, metavar="S", help="per-turn timeout in seconds")
    add_agent_options(parser, ask_note="; 'ask' is allowed here")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return run_async(lambda: _chat(args))


def chat_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``ask`` for the asked tools the user did not configure."""
    own = cfg.permission
    if isinstance(own, str):
        return cfg
    permission: dict[str, Any] = {tool: "ask" for tool in ASKED_TOOLS}
    permission.update(own or {})
    return cfg.replace(permission=permission)


class _Chat:
    def __init__(self, out: Output, reader: LineReader, session: Any, timeout_s: float | None) -> None:
        self.out = out
        self.reader = reader
        self.session = session
        self.timeout_s = timeout_s
        self.turn: asyncio.Task[RunResult] | None = None
        self.leaving = False

    def on_sigint(self) -> None:
        if self.turn is not None and not self.turn.done():
            self.turn.cancel()  # stop this turn; the chat goes on
        else:
            self.leaving = True
            self.reader.interrupt()

    async def _turn(self, text: str) -> RunResult:
        printer = TurnPrinter(self.out)
        stream = self.session.stream(text, timeout_s=self.timeout_s)
        try:
            async with stream:
                async for event in stream:
                    printer.event(event)
        finally:
            printer.end_line()
        result: RunResult = stream.result
        return result

    async def one_turn(self, text: str) -> bool:
        """Run a turn; ``False`` when the chat cannot go on (the server died)."""
        started = time.monotonic()
        self.turn = asyncio.ensure_future(self._turn(text))
        try:
            await asyncio.wait({self.turn})
        finally:
            if not self.turn.done():  # we are being cancelled (SIGTERM): stop the turn first
                self.turn.cancel()
                await asyncio.gather(self.turn, return_exceptions=True)
        elapsed = time.monotonic() - started
        if self.turn.cancelled():
            self.out.line("[stopped] the turn was aborted; you can go on")
            return True
        error = self.turn.exception()
        if error is None:
            self.out.line(result_line(self.turn.result(), elapsed))
            return True
        partial = getattr(error, "result", None)
        if isinstance(partial, RunResult):
            self.out.line(result_line(partial, elapsed))
        else:
            self.out.line(error_line(RunError(kind="session_error", message=str(error))))
        server = self.session.server
        return not isinstance(error, OpenCodeError) or server is None or server.alive

    async def loop(self) -> int:
        while True:
            text = await ask(self.out, self.reader, "\nyou> ")
            if text is None or self.leaving:
                self.out.raw("\n")
                return EXIT_OK
            if text.strip() in EXIT_WORDS:
                return EXIT_OK
            if not text.strip():
                continue
            if not await self.one_turn(text):
                return EXIT_FAILED


async def _chat(args: argparse.Namespace) -> int:
    from opencode_wrapper.server import OpenCodeServer

    out = Output()
    workspace = check_workspace(args.workspace)
    with offline_model(args) as base:
        cfg = chat_config(base)
        out.line(f"starting opencode for {workspace} ...")
        reader = LineReader()
        prompter = HumanPrompter(out, reader)
        loop = asyncio.get_running_loop()
        try:
            async with OpenCodeServer(binary=args.binary, run_cfg=cfg, cwd=workspace) as server:
                session_cfg = RunConfig(model=cfg.model, agent=cfg.agent, tools=cfg.tools)
                async with server.session(
                    workspace,
                    run_cfg=session_cfg,
                    on_permission=prompter.on_permission,
                    on_question=prompter.on_question,
                    callback_timeout_s=None,
                ) as session:
                    chat = _Chat(out, reader, session, args.timeout)
                    loop.add_signal_handler(signal.SIGINT, chat.on_sigint)
                    asked = [tool for tool, action in (cfg.permission or {}).items() if action == "ask"]
                    out.line(
                        f"chat with {cfg.model or 'the default model'}"
                        + (f", agent {cfg.agent}" if cfg.agent else "")
                        + (f"; asks before: {', '.join(asked)}" if asked else "")
                        + f". {' or '.join(EXIT_WORDS)} or Ctrl-D leaves; Ctrl-C stops a turn."
                    )
                    return await chat.loop()
        finally:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGINT)
            reader.close()
