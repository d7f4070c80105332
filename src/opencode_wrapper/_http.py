"""HTTP and SSE to one ``opencode serve``: an authenticated async client and its event stream.

Everything here is non-blocking (httpx + httpx-sse on the running loop; no threads). Errors
become :class:`OpenCodeServerError`; the credentials never appear in them (httpx sends them in
the ``Authorization`` header only, never in a URL).

opencode passes its environment, ``OPENCODE_SERVER_PASSWORD`` included, to the commands its bash
tool runs, so the password can come back inside a tool's output. Every event and error body is
therefore scrubbed: the password is replaced by ``***`` before anyone sees it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import httpx_sse

from opencode_wrapper.errors import OpenCodeServerError, ServerHTTPError

__all__ = ["ServerHTTPError", "Transport"]

# opencode sends a heartbeat on the event stream every 10 s: three missed ones mean the server
# is hung (or the network is gone), so the stream is treated as broken.
EVENT_READ_TIMEOUT_S = 30.0
# Plain API calls answer in milliseconds; these bounds only catch a hung server.
_CONNECT_TIMEOUT_S = 10.0
_REQUEST_TIMEOUT_S = 60.0
_BODY_EXCERPT = 1000


class Transport:
    """An authenticated HTTP client for one server, plus its global event stream.

    Args:
        base_url: ``http://host:port`` as the server announced it.
        username: the basic-auth user (opencode's default is ``opencode``).
        password: the basic-auth password, or ``None`` for an unprotected server.
    """

    def __init__(self, base_url: str, *, username: str, password: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        # The password as it appears in text and inside JSON strings.
        self._secrets = (
            sorted({password, json.dumps(password)[1:-1]}, key=len, reverse=True) if password else []
        )
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            # A local server speaks plain HTTP: no TLS context (loading certifi's CA bundle for
            # every server costs milliseconds of CPU and memory for nothing).
            verify=not self.base_url.startswith("http://"),
            auth=httpx.BasicAuth(username, password) if password is not None else None,
            # Never route to a local server through a proxy from the environment.
            trust_env=False,
            timeout=httpx.Timeout(_REQUEST_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S),
            # One connection per concurrent call: the default cap of 100 would queue the 101st
            # session's requests behind turns that may run for hours.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        timeout_s: float | None = _REQUEST_TIMEOUT_S,
    ) -> Any:
        """Send one request; return the decoded JSON body (``None`` for an empty body).

        Raises:
            ServerHTTPError: the server answered with a status >= 400.
            OpenCodeServerError: the server could not be reached or the connection broke.
        """
        what = f"{method} {path}"
        try:
            response = await self._client.request(
                method,
                path,
                params=dict(params) if params else None,
                json=json_body,
                timeout=httpx.Timeout(timeout_s, connect=_CONNECT_TIMEOUT_S),
            )
        except httpx.TimeoutException as exc:
            raise OpenCodeServerError(
                exit_code=None, stderr="", message=f"opencode server did not answer {what} in time ({exc!r})"
            ) from exc
        except httpx.HTTPError as exc:
            raise OpenCodeServerError(
                exit_code=None, stderr="", message=f"could not reach the opencode server for {what}: {exc!r}"
            ) from exc
        if response.status_code >= 400:
            body = self.scrub(response.text[:_BODY_EXCERPT])
            hint = " (wrong or missing credentials)" if response.status_code == 401 else ""
            raise ServerHTTPError(
                f"opencode server answered HTTP {response.status_code}{hint} to {what}: "
                f"{body or '(empty body)'}",
                status_code=response.status_code,
                body=body,
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise OpenCodeServerError(
                exit_code=None,
                stderr="",
                message=f"opencode server sent a non-JSON answer to {what}: "
                f"{self.scrub(response.text[:_BODY_EXCERPT])!r}",
            ) from exc

    def scrub(self, text: str) -> str:
        """``text`` with the password replaced by ``***``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    async def global_events(self) -> AsyncIterator[dict[str, Any]]:
        """Yield the payloads of ``GET /global/event`` until the server ends the stream.

        ``/global/event`` covers every directory of the server, so one stream serves every
        session. Each frame is ``{"directory", "project", "payload": {"id", "type", "properties"}}``;
        the payload is yielded (the shape of ``/event``) and the ``sync`` duplicates that opencode
        adds for its own clients are skipped. Frames that are not JSON objects are skipped too.

        Raises:
            ServerHTTPError: the server refused the stream (e.g. 401).
            OpenCodeServerError: the stream broke, or no byte (not even a heartbeat) came for
                ``EVENT_READ_TIMEOUT_S``.
        """
        try:
            async with httpx_sse.aconnect_sse(
                self._client,
                "GET",
                "/global/event",
                timeout=httpx.Timeout(_CONNECT_TIMEOUT_S, read=EVENT_READ_TIMEOUT_S),
            ) as source:
                response = source.response
                if response.status_code >= 400:
                    await response.aread()
                    raise ServerHTTPError(
                        f"opencode server answered HTTP {response.status_code} to GET /global/event",
                        status_code=response.status_code,
                        body=response.text[:_BODY_EXCERPT],
                    )
                async for sse in source.aiter_sse():
                    payload = _payload(self.scrub(sse.data))
                    if payload is not None:
                        yield payload
        except httpx.ReadTimeout as exc:
            raise OpenCodeServerError(
                exit_code=None,
                stderr="",
                message=f"the opencode event stream was silent for {EVENT_READ_TIMEOUT_S:.0f} s "
                "(no heartbeat): the server is hung or unreachable",
            ) from exc
        except (httpx.HTTPError, httpx_sse.SSEError) as exc:
            raise OpenCodeServerError(
                exit_code=None, stderr="", message=f"the opencode event stream broke: {exc!r}"
            ) from exc


def _payload(data: str) -> dict[str, Any] | None:
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict):
        return None
    payload = frame.get("payload", frame)
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        return None
    if payload["type"] == "sync":
        return None
    return payload
