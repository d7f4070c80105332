"""Which opencode a server is: asked at start, so that an unsupported one is refused clearly.

opencode 2.x serves another API (under ``/api/...``); driving it with 1.x requests would fail in
confusing ways, so the server's own version is checked before anything else is asked of it.
"""

from __future__ import annotations

from opencode_wrapper._http import Transport
from opencode_wrapper._proc.binary import check_supported, parse_version, supported_range
from opencode_wrapper.errors import OpenCodeVersionError, ServerHTTPError

__all__ = ["server_version"]


async def server_version(transport: Transport, url: str, timeout_s: float) -> tuple[int, int, int]:
    """The server's version (``GET /global/health``).

    Raises:
        OpenCodeVersionError: the route is missing, says no version, or a version outside the
            supported range.
    """
    try:
        health = await transport.request("GET", "/global/health", timeout_s=timeout_s)
    except ServerHTTPError as exc:
        if exc.status_code in (404, 405):
            raise OpenCodeVersionError(
                f"the server at {url} has no GET /global/health route (HTTP {exc.status_code}): "
                "it is not an opencode 1.x server, which this package needs",
                supported=supported_range(),
            ) from exc
        raise
    found = health.get("version") if isinstance(health, dict) else None
    version = parse_version(found) if isinstance(found, str) else None
    if version is None:
        raise OpenCodeVersionError(
            f"the server at {url} did not say its version (GET /global/health answered {health!r:.200})",
            supported=supported_range(),
        )
    check_supported(version, f"the server at {url}")
    return version
