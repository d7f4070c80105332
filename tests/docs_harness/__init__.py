"""Runs the examples of the documentation: README.md and docs/**/*.md.

What runs, and how:

* Every fenced ```` ```python ```` block is one program, run in a fresh subprocess (the venv's
  Python) whose current directory is a scratch git repository (``README.md``, ``src/app.py``,
  ``tests/test_app.py``, ``services/{api,worker,gateway}/main.py``, one commit), so examples use
  ``"."`` or relative paths. A block may use ``await`` at top level: it then runs in an asyncio
  event loop, as in ``python -m asyncio``. Tracebacks point at the Markdown file and line.
* Each run has a time limit (``OCW_DOCS_TIMEOUT`` seconds, default 120) and must leave no process
  behind: every process it starts carries a tag in its environment, and any tagged process (or
  process inside the run's folder) still alive when the program has exited fails the example and
  is killed by its PID.
* Models are swapped for the offline model at the provider level, so an example runs unchanged:
  the subprocess gets a private ``HOME``/``XDG_*`` whose global opencode config declares each
  ``provider/model`` string of the block (``model="..."``, ``-m``/``--model ...``), and
  ``offline/scripted``, as an OpenAI-compatible provider whose base URL is an offline model server
  that the harness runs. The wrapper's user-config isolation keeps the ``provider`` and
  ``enabled_providers`` keys of that config, so ``RunConfig(model="anthropic/claude-sonnet-4-5")``
  reaches the offline model. API keys (``*_API_KEY``) are removed from the environment.
* A ```` ```console ```` block whose commands use ``--offline`` is checked: each ``$ command``
  runs (bash, in a scratch repository, ``opencode-wrapper`` from the venv) and its output must
  match the lines shown under it. In the shown output, ``...`` inside a line matches any text and a
  line that is only ``...`` matches any number of lines. Other console blocks, and ``bash``/``sh``
  blocks, are listed as not checked.

Markers, an HTML comment on the line(s) right before a block (invisible on the site):

* ``<!-- not-run: REASON -->``: the block is not run (or checked); the reason is required and the
  test lists every such block with it.
* ``<!-- continues -->``: the block continues the previous Python block of the same file; the
  chain runs as one program (each block at its own line), and the earlier blocks do not run alone.

``python -m tests.docs_harness [FILES...]`` runs them outside pytest and prints the report.
"""

from .blocks import Block, DocInventory, Example, collect, doc_files
from .runner import Outcome, run_examples

__all__ = ["Block", "DocInventory", "Example", "Outcome", "collect", "doc_files", "run_examples"]
