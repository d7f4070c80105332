"""pytest fixtures for the offline model (loaded in every pytest run via the ``pytest11`` entry point).

* ``offline_model``: a started :class:`~opencode_wrapper.testing.OfflineModelServer`, stopped after
  the test. Steer it with ``offline_model.enqueue(...)`` / ``offline_model.add_rule(...)``, or with
  directives in the prompt; read ``offline_model.chat_requests``.
* ``offline_run_config``: ``offline_model.run_config()``, a ``RunConfig`` pointing opencode at it.
* ``strict_offline_model``: the same server with ``strict=True``: a chat request that no script
  entry or rule answers fails (HTTP 400 to opencode), and the fixture's teardown calls
  ``assert_complete()``, so the test also fails if a script entry (or fault) was never used.
* the marker ``@pytest.mark.offline_model(**options)``: keyword arguments for the
  ``OfflineModelServer`` of either fixture, e.g. ``script=[...]``, ``rules=[...]``, ``strict=True``.
  ``offline_model`` with ``strict=True`` also calls ``assert_complete()`` at teardown.

The teardown check runs even when the test body failed (pytest then reports the test's failure
and an error in teardown). This module only imports the server inside the fixtures, so loading
the plugin costs nothing and works without the opencode binary.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opencode_wrapper.config import RunConfig
    from opencode_wrapper.testing._server import OfflineModelServer

MARKER = "offline_model"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): OfflineModelServer keyword arguments (script=, rules=, strict=, ...) "
        "for the offline_model and strict_offline_model fixtures",
    )


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return {}
    if marker.args:
        from opencode_wrapper.errors import OpenCodeConfigError

        raise OpenCodeConfigError(
            f"@pytest.mark.{MARKER} takes OfflineModelServer keyword arguments only "
            f"(e.g. script=[...], strict=True), got positional {marker.args!r}"
        )
    return dict(marker.kwargs)


def _serve(options: dict[str, Any]) -> Iterator[OfflineModelServer]:
    from opencode_wrapper.testing._server import OfflineModelServer

    with OfflineModelServer(**options) as server:
        yield server
        if server.strict:
            server.assert_complete()


@pytest.fixture
def offline_model(request: pytest.FixtureRequest) -> Iterator[OfflineModelServer]:
    """A running offline model server, stopped after the test.

    Built-in rules and no script, unless ``@pytest.mark.offline_model(...)`` says otherwise; with
    ``strict=True`` there, teardown calls ``assert_complete()``.
    """
    yield from _serve(_options(request))


@pytest.fixture
def strict_offline_model(request: pytest.FixtureRequest) -> Iterator[OfflineModelServer]:
    """A running ``OfflineModelServer(strict=True)`` whose teardown calls ``assert_complete()``.

    Script it with ``strict_offline_model.enqueue(...)`` / ``add_rule(...)`` in the test, or with
    ``@pytest.mark.offline_model(script=[...], ...)``.
    """
    yield from _serve({**_options(request), "strict": True})


@pytest.fixture
def offline_run_config(offline_model: OfflineModelServer) -> RunConfig:
    """A ``RunConfig`` for the ``offline_model`` fixture (``model="offline/scripted"``)."""
    return offline_model.run_config()
