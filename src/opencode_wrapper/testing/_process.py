"""``OfflineModelProcess``: run ``python -m opencode_wrapper.testing`` as a child process."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.testing._assertions import raise_for_report
from opencode_wrapper.testing._config import provider_config, run_config
from opencode_wrapper.testing._handler import REPORT_PATH

if TYPE_CHECKING:
    from opencode_wrapper.config import RunConfig

# The child runs ``opencode_wrapper.testing.__main__`` under a bare ``opencode_wrapper`` package
# module: the real package ``__init__`` imports the whole client (several hundred ms), none of
# which the stdlib-only server needs. ``python -m opencode_wrapper.testing`` is equivalent, slower.
_BOOTSTRAP = """\
import sys, types
package = types.ModuleType("opencode_wrapper")
package.__path__ = [sys.argv.pop(1)]
sys.modules["opencode_wrapper"] = package
from opencode_wrapper.testing.__main__ import main
sys.exit(main())
"""
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)

_LISTENING = re.compile(rb"^offline model listening on (http://127\.0\.0\.1:(\d+)/v1)\r?\n")


class OfflineModelProcess:
    """The offline model in its own Python process (for CI jobs or tools outside this process).

    The child runs ``python -m opencode_wrapper.testing``'s ``main``; :meth:`start` waits for its
    ``offline model listening on URL`` line, :meth:`stop` sends SIGTERM to its PID (SIGKILL after
    ``stop_timeout``) and reaps it. Requests are not recorded on this side; :meth:`report`,
    :meth:`check` and :meth:`assert_complete` ask the child (``GET /_offline/report``).

    Example::

        with OfflineModelProcess(rules=[{"match": "hello", "reply": {"text": "Hi!"}}], strict=True) as model:
            config = model.run_config()
            ...
            model.assert_complete()

    Args:
        rules: the JSON form of a rules file (a list of rules or an object; see
            ``OfflineModelServer.from_json``), written to a temporary file for the child.
        rules_file: an existing rules file (instead of ``rules``).
        port: TCP port; 0 picks a free one.
        python: the interpreter to run (default: this one).
        startup_timeout: seconds to wait for the URL line.
        stop_timeout: seconds to wait after SIGTERM before SIGKILL.
        env: extra environment variables for the child.
        strict: run the child with ``--strict`` (see ``OfflineModelServer``'s strict mode); the
            JSON form's ``"strict": true`` does the same.

    Raises:
        OpenCodeConfigError: both ``rules`` and ``rules_file``, or a ``strict`` that is not a bool.
    """

    def __init__(
        self,
        rules: Any = None,
        *,
        rules_file: str | os.PathLike[str] | None = None,
        port: int = 0,
        python: str = sys.executable,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        env: dict[str, str] | None = None,
        strict: bool = False,
    ) -> None:
        if rules is not None and rules_file is not None:
            raise OpenCodeConfigError("pass rules or rules_file, not both")
        if not isinstance(strict, bool):
            raise OpenCodeConfigError(f"strict must be True or False, got {strict!r}")
        self.strict = strict
        self.rules = rules
        self.rules_file = None if rules_file is None else os.fspath(rules_file)
        self.port_requested = port
        self.python = python
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.env = dict(env or {})
        #: Seconds from spawning the child to reading its URL line (set by :meth:`start`).
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._temp_rules: str | None = None
        self._url: str | None = None

    def _command(self) -> list[str]:
        command = [self.python, "-c", _BOOTSTRAP, _PACKAGE_DIR, "--port", str(self.port_requested)]
        rules_file = self.rules_file
        if self.rules is not None:
            fd, self._temp_rules = tempfile.mkstemp(prefix="offline-model-rules-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.rules, f)
            rules_file = self._temp_rules
        if rules_file is not None:
            command += ["--rules", rules_file]
        if self.strict:
            command.append("--strict")
        return command

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}

    def start(self) -> OfflineModelProcess:
        """Spawn the child and wait for its URL line; returns ``self``.

        Raises:
            RuntimeError: the child exited or printed something else (its stderr is included).
            TimeoutError: no URL line within ``startup_timeout``.
        """
        if self._process is not None:
            return self
        started = time.monotonic()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self._environment(),
        )
        try:
            line = self._read_line(started + self.startup_timeout)
            match = _LISTENING.match(line)
            if match is None:
                raise RuntimeError(
                    f"offline model printed {line!r} instead of its URL line{self._stderr_note()}"
                )
        except BaseException:
            self.stop()
            raise
        self._url = match.group(1).decode()
        self.startup_seconds = time.monotonic() - started
        return self

    def _read_line(self, deadline: float) -> bytes:
        process = self._process
        assert process is not None and process.stdout is not None
        fd, data = process.stdout.fileno(), b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"offline model printed no URL line within {self.startup_timeout} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    process.wait()
                    raise RuntimeError(
                        f"offline model exited with status {process.returncode} before printing its URL"
                        f"{self._stderr_note()}"
                    )
                data += chunk
        return data

    def _stderr_note(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return f"; stderr:\n{text}" if text else ""

    def stop(self) -> None:
        """SIGTERM the child by PID, SIGKILL it if it is still alive after ``stop_timeout``, reap it."""
        process, self._process, self._url = self._process, None, None
        if process is not None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._temp_rules is not None:
            os.unlink(self._temp_rules)
            self._temp_rules = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self._process is None:
            raise RuntimeError("the offline model process is not running")
        return self._process.pid

    @property
    def url(self) -> str:
        """The OpenAI base URL the child printed, ``http://127.0.0.1:PORT/v1``."""
        if self._url is None:
            raise RuntimeError("the offline model process is not running; call start()")
        return self._url

    @property
    def port(self) -> int:
        """The child's TCP port."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def report(self, timeout: float = 10.0) -> dict[str, Any]:
        """The child's ``OfflineModelServer.report()``: ``{"unexpected", "unused", "faulted"}`` lists."""
        base = self.url.removesuffix("/v1")
        with urllib.request.urlopen(base + REPORT_PATH, timeout=timeout) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def check(self) -> None:
        """Raise ``UnexpectedModelCall`` if the (strict) child failed any request so far."""
        raise_for_report(self.report(), complete=False)

    def assert_complete(self) -> None:
        """Like ``OfflineModelServer.assert_complete``, from the child's report: raises
        ``UnexpectedModelCall`` or ``UnconsumedModelSteps`` (their ``requests`` are empty here)."""
        raise_for_report(self.report(), complete=True)

    def provider_config(self) -> dict[str, Any]:
        """The opencode config fragment declaring this model (see ``OfflineModelServer.provider_config``)."""
        return provider_config(self.url)

    def run_config(self, **fields: Any) -> RunConfig:
        """A ``RunConfig`` using this model (see ``OfflineModelServer.run_config``)."""
        return run_config(self.url, **fields)

    def __enter__(self) -> OfflineModelProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> OfflineModelProcess:
        import asyncio  # only here: importing asyncio costs more than the rest of this module

        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio  # only here: importing asyncio costs more than the rest of this module

        await asyncio.to_thread(self.stop)
