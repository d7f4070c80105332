"""End-to-end: the strict offline model and fault injection against the real opencode, through the
public client API (``AsyncOpenCodeClient.async_run`` and ``OpenCodeServer.session``).

Fail-fast is asserted on what the model saw (one chat request, no retry) and on the error kind,
not on wall time: opencode retries a 5xx or 429 six times over ~69 s, a 400 never.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opencode_wrapper import AsyncOpenCodeClient, OpenCodeProcessError
from opencode_wrapper.server import OpenCodeServer
from opencode_wrapper.testing import (
    STRICT_ERROR_CODE,
    OfflineModelServer,
    Reply,
    ReplyLike,
    UnconsumedModelSteps,
    UnexpectedModelCall,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(opencode_binary: str) -> AsyncOpenCodeClient:
    return AsyncOpenCodeClient(opencode_binary, startup_delay_s=0)


async def test_a_fully_consumed_script_passes_assert_complete(
    client: AsyncOpenCodeClient, workspace: Path
) -> None:
    script: list[ReplyLike] = [Reply.bash("echo strict-ok"), "The command printed strict-ok."]
    with OfflineModelServer(script=script, strict=True) as model:
        result = await client.async_run(
            "Run the check.", workspace, run_cfg=model.run_config(permission={"bash": "allow"}), timeout_s=120
        )
        model.assert_complete()
    assert result.ok, result.error
    assert result.final_text == "The command printed strict-ok."
    chats = model.chat_requests
    assert len(chats) == 2 and [(r.name, r.output) for r in chats[1].tool_results] == [
        ("bash", "strict-ok\n")
    ]
    assert model.unexpected_requests == []


async def test_an_unscripted_prompt_fails_the_run_at_once_and_is_named(
    client: AsyncOpenCodeClient, workspace: Path
) -> None:
    with OfflineModelServer(strict=True) as model:
        with pytest.raises(OpenCodeProcessError) as caught:
            await client.async_run(
                "Refactor the parser.", workspace, run_cfg=model.run_config(), timeout_s=120
            )
        with pytest.raises(UnexpectedModelCall) as unexpected:
            model.assert_complete()
    result = caught.value.result
    assert result is not None and result.error is not None
    assert (result.error.kind, result.error.status_code) == ("api_error", 400)
    assert "offline model (strict): unexpected chat request" in result.error.message
    data = result.error.detail["data"]  # opencode's own APIError fields
    assert data["isRetryable"] is False and STRICT_ERROR_CODE in data["responseBody"], data
    # One chat request and no retry: a 5xx would have been sent six times over ~69 s.
    (chat,) = model.chat_requests
    assert model.unexpected_requests == [chat]
    assert unexpected.value.requests == [chat]
    assert unexpected.value.descriptions == [
        f"request #{chat.index} (session {result.session_id}): last user message 'Refactor the parser.'"
    ]


async def test_sessions_left_over_entry_then_unexpected_turn(opencode_binary: str, workspace: Path) -> None:
    fast = {"snapshot": False, "agent": {"title": {"disable": True}}}
    with OfflineModelServer(script=["First answer.", "Second answer."], strict=True) as model:
        async with (
            OpenCodeServer(
                binary=opencode_binary, run_cfg=model.run_config(config_overrides=fast), cwd=workspace
            ) as server,
            server.session(workspace) as session,
        ):
            first = await session.send("one")
            with pytest.raises(UnconsumedModelSteps) as left_over:
                model.assert_complete()
            second = await session.send("two")
            model.assert_complete()
            with pytest.raises(OpenCodeProcessError) as third:
                await session.send("three, unscripted")
            after = len(model.chat_requests)
            with pytest.raises(UnexpectedModelCall, match=r"last user message 'three, unscripted'"):
                model.assert_complete()
            # The failed turn left the session usable.
            model.clear()
            model.enqueue("Fourth answer.")
            fourth = await session.send("four")
        model.assert_complete()
    assert (first.final_text, second.final_text) == ("First answer.", "Second answer.")
    assert left_over.value.descriptions == ["script entry 2 of 2: text 'Second answer.'"]
    error = third.value.result.error if third.value.result else None
    assert error is not None and (error.kind, error.status_code) == ("api_error", 400)
    assert after == 3  # the failed turn was not retried
    assert fourth.final_text == "Fourth answer."


async def test_a_500_once_is_retried_by_opencode_and_recorded(
    client: AsyncOpenCodeClient, workspace: Path
) -> None:
    with OfflineModelServer(script=["Answered after the retry."], strict=True) as model:
        fault = model.fail(500, times=1)
        result = await client.async_run("hello", workspace, run_cfg=model.run_config(), timeout_s=120)
        model.assert_complete()
    assert result.ok, result.error
    assert result.final_text == "Answered after the retry."
    first, retry = model.chat_requests
    assert fault.served == [first] and model.faulted_requests == [first]
    assert retry.last_user_text == first.last_user_text == "hello"
