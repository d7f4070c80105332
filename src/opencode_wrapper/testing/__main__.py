"""``python -m opencode_wrapper.testing [--port 0] [--rules FILE.json] [--strict]``: the offline model
as a process.

Prints exactly one line, ``offline model listening on http://127.0.0.1:PORT/v1``, then serves until
SIGTERM or SIGINT (exit status 0). A bad rules file exits with status 2 and a message on stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from opencode_wrapper.testing._server import OfflineModelServer

#: The line printed once the server accepts connections (``{url}`` ends in ``/v1``).
LISTENING_LINE = "offline model listening on {url}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opencode_wrapper.testing",
        description="Serve the offline scripted OpenAI-compatible model on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one)")
    parser.add_argument(
        "--rules",
        metavar="FILE.json",
        help='JSON list of {"match": regex, "reply": {...}} rules, or an object with "rules", '
        '"script", "default", "title", "builtin_rules", "chunk_size", "strict", "faults"',
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="answer chat requests that no script entry or rule answers with HTTP 400 "
        "(GET /_offline/report lists them)",
    )
    args = parser.parse_args(argv)
    try:
        if args.rules:
            with open(args.rules, encoding="utf-8") as f:
                data = json.load(f)
            if args.strict:
                data = {**(data if isinstance(data, dict) else {"rules": data}), "strict": True}
            server = OfflineModelServer.from_json(data, port=args.port)
        else:
            server = OfflineModelServer(port=args.port, strict=args.strict)
    except (OSError, ValueError, TypeError) as exc:
        print(f"offline model: cannot load rules file {args.rules!r}: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(LISTENING_LINE.format(url=server.url), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
