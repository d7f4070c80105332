"""Drop-in check: the seed release's tests (``py-opencode-wrapper==0.3.8``), unchanged, against this package.

Every seed test that uses only public names must pass here (the selection rules, the gate policy
and the isolation of the child pytest are described in :mod:`seed_harness`). The selector and the
sdist handling have fast tests of their own first.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from opencode_wrapper.testing import Completion, RecordedRequest, ToolCall
from seed_harness.model_rules import instruction_reply
from seed_harness.plan import Gate, Plan, make_plan
from seed_harness.runner import run_seed_tests
from seed_harness.sdist import (
    SEED_ARCHIVE,
    SeedArchiveError,
    SeedTests,
    extract_tests,
    obtain_archive,
    seed_tests,
)
from seed_harness.selector import UNCONDITIONAL_SKIP, Verdict, select_directory, select_source

SYNTHETIC = """
import os
import pytest
import opencode_wrapper.session as session_mod
from opencode_wrapper import RunConfig


class _Fake:
    def __init__(self):
        self._state = 1

    def _helper(self):
        return self._state


def _patch_private(monkeypatch):
    monkeypatch.setattr("opencode_wrapper.session._Server", _Fake)


def _public_helper():
    return _Fake()._helper()


@pytest.fixture
def patched(monkeypatch):
    _patch_private(monkeypatch)


@pytest.fixture
def poked():
    return RunConfig()._cache


def _slow_enabled():
    return os.environ.get("SLOW_GATE") == "1"


@pytest.fixture
def slow_gate():
    if not _slow_enabled():
        pytest.skip("set SLOW_GATE=1")


def test_public(tmp_path):
    assert RunConfig() is not None and _public_helper() == 1


def test_private_via_fixture_and_helper(patched):
    pass


def test_private_attribute_via_fixture(poked):
    pass


def test_private_module_attribute():
    assert session_mod._Internal


def test_setattr_private_name(monkeypatch):
    monkeypatch.setattr(RunConfig, "_x", 1)


def test_private_import_inside_function():
    from opencode_wrapper.client import _secret


def test_foreign_private_is_not_ours():
    assert os._exit


@pytest.mark.integration
def test_gated_integration(opencode_path, slow_gate):
    pass


@pytest.mark.skipif(not os.environ.get("OTHER_GATE"), reason="needs OTHER_GATE")
def test_skipif_gate():
    pass


def test_always_skips():
    pytest.skip("never runs")


@pytest.mark.parametrize("x", [1, 2])
def test_parametrized(x):
    pass


class TestGroup:
    @pytest.fixture(autouse=True)
    def _setup(self):
        self._local = 1

    def test_in_class(self):
        assert self._local == 1
"""


def by_name(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.nodeid.split("::", 1)[1]: v for v in verdicts}


def test_selector_keeps_public_tests_and_drops_private_ones() -> None:
    verdicts = by_name(select_source(SYNTHETIC, "tests/test_synthetic.py"))
    selected = {name for name, v in verdicts.items() if v.selected}
    assert selected == {
        "test_public",
        "test_foreign_private_is_not_ours",
        "test_gated_integration",
        "test_skipif_gate",
        "test_always_skips",
        "test_parametrized",
        "TestGroup::test_in_class",
    }
    reasons = {name: v.reason for name, v in verdicts.items() if not v.selected}
    assert reasons == {
        "test_private_via_fixture_and_helper": (
            "names private 'opencode_wrapper.session._Server' (via fixture patched -> _patch_private)"
        ),
        "test_private_attribute_via_fixture": "uses private attribute ._cache (via fixture poked)",
        "test_private_module_attribute": "uses private opencode_wrapper.session._Internal",
        "test_setattr_private_name": "setattr(..., '_x')",
        "test_private_import_inside_function": "imports private opencode_wrapper.client._secret",
    }
    gated = verdicts["test_gated_integration"]
    assert gated.integration and gated.gates == ("SLOW_GATE",)
    assert gated.fixtures == ("opencode_path",)
    assert verdicts["test_skipif_gate"].gates == ("OTHER_GATE",)
    assert verdicts["test_always_skips"].gates == (UNCONDITIONAL_SKIP,)
    assert verdicts["test_parametrized"].fixtures == ()  # "x" is a parameter, not a fixture
    assert verdicts["test_public"].fixtures == ("tmp_path",) and not verdicts["test_public"].integration
    assert verdicts["TestGroup::test_in_class"].nodeid == "tests/test_synthetic.py::TestGroup::test_in_class"


def test_selector_drops_a_whole_module_that_imports_a_private_name() -> None:
    source = "from opencode_wrapper.client import build_env, _hidden\n\ndef test_a():\n    build_env\n"
    (verdict,) = select_source(source, "tests/test_m.py")
    assert not verdict.selected
    assert verdict.reason == "module imports private opencode_wrapper.client._hidden"
    (dunder,) = select_source("from opencode_wrapper import __version__\n\ndef test_b():\n    pass\n", "t.py")
    assert dunder.selected


def test_plan_runs_a_gated_test_only_when_its_gate_can_be_met() -> None:
    verdicts = select_source(SYNTHETIC, "tests/test_synthetic.py")
    gates = {"SLOW_GATE": Gate("1", "cheap here"), "OTHER_GATE": Gate(None, "needs the internet")}
    plan = make_plan(verdicts, gates)
    result = by_name(list(plan.verdicts))
    assert result["test_gated_integration"].selected and plan.env == {"SLOW_GATE": "1"}
    assert [v.nodeid.split("::")[1] for v in plan.integration] == ["test_gated_integration"]
    assert result["test_skipif_gate"].reason == (
        "gated by OTHER_GATE, which cannot be met honestly: needs the internet"
    )
    assert result["test_always_skips"].reason == "it always skips itself"
    unreviewed = by_name(list(make_plan(verdicts, {}).verdicts))["test_gated_integration"]
    assert unreviewed.reason == "its skip switch SLOW_GATE has no reviewed gate policy"


def test_extract_takes_only_the_tests_folder(tmp_path: Path) -> None:
    archive = tmp_path / "seed.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in {
            "pkg-1.0/tests/test_a.py": "def test_a(): pass\n",
            "pkg-1.0/tests/data.json": "{}",
            "pkg-1.0/tests/sub/test_b.py": "",
            "pkg-1.0/opencode_wrapper/__init__.py": "SEED = True\n",
            "pkg-1.0/tests/../../evil.py": "",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    seed = extract_tests(archive, tmp_path / "out")
    assert sorted(p.relative_to(seed.root).as_posix() for p in seed.root.rglob("*") if p.is_file()) == [
        "tests/test_a.py"
    ]
    assert not (tmp_path / "evil.py").exists()


def test_a_cached_sdist_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    (tmp_path / SEED_ARCHIVE).write_bytes(b"not the seed")
    with pytest.raises(SeedArchiveError, match="delete it to download again"):
        obtain_archive(tmp_path)


def chat(system: str, *messages: Mapping[str, object], tools: tuple[str, ...] = ()) -> RecordedRequest:
    body = {
        "messages": [{"role": "system", "content": system}, *messages],
        "tools": [{"type": "function", "function": {"name": name}} for name in tools],
    }
    return RecordedRequest(0, "POST", "/v1/chat/completions", {}, body, b"", 0.0)


def user(text: str) -> Mapping[str, object]:
    return {"role": "user", "content": text}


def test_model_rules_follow_only_instructions_that_reached_the_system_prompt() -> None:
    probe = 'When the user inputs exactly "__kw__", reply with exactly "ANSWER!" and nothing else.'
    assert instruction_reply(chat(f"You are opencode.\n{probe}", user("__kw__"))) == Completion(
        text="ANSWER!"
    )
    assert instruction_reply(chat("You are opencode.", user("__kw__"))) is None  # falls through to the echo
    assert instruction_reply(chat(probe, user("something else"))) is None
    canary = "Always begin every response with the exact token: TOK_1"
    assert instruction_reply(chat(canary, user("Say it."))) == Completion(text="TOK_1 You said: Say it.")


def test_model_rules_call_a_requested_tool_only_when_offered_and_only_on_a_user_turn() -> None:
    ask = user("Run the shell command `echo HI` and tell me its output.")
    reply = instruction_reply(chat("", ask, tools=("bash", "read")))
    assert reply == Completion(
        tool_calls=(ToolCall("bash", {"command": "echo HI", "description": "Run the requested command"}),)
    )
    assert instruction_reply(chat("", ask, tools=("read",))) is None  # bash denied: not offered
    after_tool = {"role": "tool", "tool_call_id": "c1", "content": "HI"}
    assert instruction_reply(chat("", ask, after_tool, tools=("bash",))) is None
    read = user("Use the read tool on this absolute path, then reply:\n/tmp/x/payload.txt")
    assert instruction_reply(chat("", read, tools=("read",))) == Completion(
        tool_calls=(ToolCall("read", {"filePath": "/tmp/x/payload.txt"}),)
    )
    question = user("Use the `question` tool to ask me whether to go on, with options 'Yes' and 'No'.")
    (call,) = instruction_reply(chat("", question, tools=("question",))).tool_calls  # type: ignore[union-attr]
    assert [o["label"] for o in call.arguments["questions"][0]["options"]] == ["Yes", "No"]  # type: ignore[index]


# --- the seed's tests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> SeedTests:
    """The seed's tests, from the verified (cached, or downloaded once) sdist."""
    return seed_tests(tmp_path_factory.mktemp("seed"))


@pytest.fixture(scope="module")
def plan(seed: SeedTests) -> Plan:
    return make_plan(select_directory(seed.tests_dir, seed.root))


def test_seed_public_unit_tests_pass(seed: SeedTests, plan: Plan, tmp_path: Path) -> None:
    print(plan.describe())
    assert plan.unit, "the selector kept no seed unit test"
    run = run_seed_tests(seed, plan.unit, tmp_path, env=plan.env, timeout_s=120, test_timeout_s=60)
    print(run.summary(plan.unit))
    assert not run.failures(plan.unit), run.summary(plan.unit)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_seed_public_integration_tests_pass(
    seed: SeedTests, plan: Plan, tmp_path: Path, opencode_binary: str
) -> None:
    """The seed's ``integration`` tests on the real pinned opencode, with the offline model as provider."""
    print(plan.describe())
    assert plan.integration, "the selector kept no seed integration test"
    env = {**plan.env, "OPENCODE_BINARY": opencode_binary}
    run = run_seed_tests(seed, plan.integration, tmp_path, env=env, timeout_s=840, test_timeout_s=300)
    print(run.summary(plan.integration))
    assert not run.failures(plan.integration), run.summary(plan.integration)
