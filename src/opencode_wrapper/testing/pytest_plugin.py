"""pytest fixtures for the offline model (loaded in every pytest run via the ``pytest11`` entry point).

* ``offline_model``: a started :class:`~opencode_wrapper.testing.OfflineModelServer`, stopped after
  the test. Steer it with ``offline_model.enqueue(...)`` / ``offline_model.add_rule(...)``, or with
  directives in the prompt; read ``offline_model.chat_requests``.
* ``offline_run_config``: ``offline_model.run_config()``, a ``RunConfig`` pointing opencode at it.

This module only imports the server inside the fixtures, so loading the plugin costs nothing and
works without the opencode binary.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from opencode_wrapper.config import RunConfig
    from opencode_wrapper.testing._server import OfflineModelServer


@pytest.fixture
def offline_model() -> Iterator[OfflineModelServer]:
    """A running offline model server (built-in rules, no script), stopped after the test."""
    from opencode_wrapper.testing._server import OfflineModelServer

    with OfflineModelServer() as server:
        yield server


@pytest.fixture
def offline_run_config(offline_model: OfflineModelServer) -> RunConfig:
    """A ``RunConfig`` for the ``offline_model`` fixture (``model="offline/scripted"``)."""
    return offline_model.run_config()
