"""The pytest side of the offline model: the ``strict_offline_model`` fixture, the ``offline_model``
marker and their teardown checks, run in an inner pytest session (``pytester``, no opencode)."""

from __future__ import annotations

import pytest

# pytester's in-process runs drop the modules first imported during a run; importing the server
# here keeps one copy of the reply classes for the inner runs (which share this process).
import opencode_wrapper.testing._server  # noqa: F401

pytest_plugins = ["pytester"]

HELPERS = """
import httpx
import pytest
from opencode_wrapper.testing import Reply


def ask(model, prompt):
    body = {"model": "scripted", "stream": False, "messages": [{"role": "user", "content": prompt}]}
    response = httpx.post(f"{model.url}/chat/completions", json=body, timeout=10)
    return response.status_code, response.json()
"""


def run(pytester: pytest.Pytester, tests: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=HELPERS + tests)
    return pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", "--strict-markers")


def test_strict_fixture_passes_when_the_script_is_used_up(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
def test_it(strict_offline_model):
    strict_offline_model.enqueue("one", "two")
    assert ask(strict_offline_model, "a")[1]["choices"][0]["message"]["content"] == "one"
    assert ask(strict_offline_model, "b")[1]["choices"][0]["message"]["content"] == "two"
    assert strict_offline_model.strict
""",
    )
    result.assert_outcomes(passed=1)


def test_strict_fixture_teardown_fails_on_a_left_over_entry(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
def test_it(strict_offline_model):
    strict_offline_model.enqueue("one", "never used")
    ask(strict_offline_model, "a")
""",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_it*",
            "*UnconsumedModelSteps*",
            "*script entry 2 of 2: text 'never used'*",
        ]
    )


def test_strict_fixture_teardown_names_an_unexpected_request(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
def test_it(strict_offline_model):
    status, _ = ask(strict_offline_model, "who scripted this?")
    assert status == 400
""",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*UnexpectedModelCall*", "*last user message 'who scripted this?'*"])


def test_marker_configures_both_fixtures_and_strict_offline_model_checks(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
@pytest.mark.offline_model(script=[Reply.text("from the marker")], title="T")
def test_lenient(offline_model):
    assert ask(offline_model, "a")[1]["choices"][0]["message"]["content"] == "from the marker"
    assert ask(offline_model, "b")[1]["choices"][0]["message"]["content"] == "You said: b"
    assert (offline_model.title, offline_model.strict) == ("T", False)


@pytest.mark.offline_model(script=["scripted"], strict=True)
def test_marked_strict(offline_model):
    ask(offline_model, "a")
    assert ask(offline_model, "b")[0] == 400


@pytest.mark.offline_model(script=["x", "y"])
def test_strict_fixture_with_marker_script(strict_offline_model):
    ask(strict_offline_model, "a")
""",
    )
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_marked_strict*",
            "*last user message 'b'*",
            "*ERROR at teardown of test_strict_fixture_with_marker_script*",
            "*script entry 2 of 2: text 'y'*",
        ]
    )


def test_marker_with_positional_arguments_is_a_config_error(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
@pytest.mark.offline_model(["x"])
def test_it(offline_model):
    pass
""",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*OpenCodeConfigError*takes OfflineModelServer keyword arguments only*"])
