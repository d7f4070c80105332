"""Unit tests of ``opencode_wrapper.tools``: definitions, JSON schemas, validation, config entries."""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from opencode_wrapper.errors import OpenCodeConfigError
from opencode_wrapper.tools import Tool, ToolArgumentsError, ToolServer, as_tools, opencode_tool_name, tool


class Point(BaseModel):
    x: int
    y: int = 0


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Box:
    width: float
    label: str = "box"


# ----------------------------------------------------------------------------- schemas


def test_name_description_and_required_from_the_signature() -> None:
    @tool
    async def add(a: int, b: int = 2) -> int:
        """Add two numbers.

        Args:
            a: the first number.
            b: the second number,
                which defaults to two.

        Returns:
            The sum.
        """
        return a + b

    assert isinstance(add, Tool) and add.is_async
    assert add.name == "add"
    assert add.description == "Add two numbers."
    assert add.input_schema == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "a": {"type": "integer", "description": "the first number."},
            "b": {
                "type": "integer",
                "default": 2,
                "description": "the second number, which defaults to two.",
            },
        },
        "required": ["a"],
    }


def test_descriptions_from_annotated_and_field_win_over_the_docstring() -> None:
    @tool
    def search(
        query: Annotated[str, "what to look for"],
        limit: Annotated[int, Field(description="at most this many", ge=1, le=50)] = 10,
        exact: bool = Field(False, description="match the whole word"),
        note: str = "",
    ) -> list[str]:
        """Search the notes.

        :param query: ignored, Annotated wins
        :param note: a free-form note
        """
        return []

    props = search.input_schema["properties"]
    assert props["query"] == {"type": "string", "description": "what to look for"}
    assert props["limit"] == {
        "type": "integer",
        "default": 10,
        "minimum": 1,
        "maximum": 50,
        "description": "at most this many",
    }
    assert props["exact"] == {"type": "boolean", "default": False, "description": "match the whole word"}
    assert props["note"] == {"type": "string", "default": "", "description": "a free-form note"}
    assert search.input_schema["required"] == ["query"]
    assert not search.is_async


def test_models_enums_literals_and_containers_get_their_json_schema() -> None:
    @tool(name="draw", description="Draw shapes.")
    def shapes(
        points: list[Point],
        color: Color,
        mode: Literal["fill", "stroke"] = "fill",
        box: Box | None = None,
        tags: dict[str, int] | None = None,
        *,
        scale: float = 1.0,
    ) -> str:
        """Not used: description= overrides the docstring."""
        return ""

    schema = shapes.input_schema
    assert shapes.name == "draw" and shapes.description == "Draw shapes."
    assert schema["properties"]["points"] == {"type": "array", "items": {"$ref": "#/$defs/Point"}}
    assert schema["$defs"]["Point"]["required"] == ["x"]
    assert schema["properties"]["color"] == {"$ref": "#/$defs/Color"}
    assert schema["$defs"]["Color"]["enum"] == ["red", "blue"]
    assert schema["properties"]["mode"] == {"type": "string", "enum": ["fill", "stroke"], "default": "fill"}
    assert schema["properties"]["box"]["anyOf"] == [{"$ref": "#/$defs/Box"}, {"type": "null"}]
    assert schema["properties"]["tags"]["anyOf"][0] == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
    }
    assert schema["properties"]["scale"] == {"type": "number", "default": 1.0}
    assert schema["required"] == ["points", "color"]


def test_names_that_clash_with_pydantic_attributes_are_fine() -> None:
    @tool
    def odd(json: str, model_config: int, schema: bool = True) -> None:
        """Parameters named like BaseModel attributes."""

    assert set(odd.input_schema["properties"]) == {"json", "model_config", "schema"}
    assert odd.bind({"json": "j", "model_config": "3"}) == (
        [],
        {"json": "j", "model_config": 3, "schema": True},
    )


def test_a_tool_without_parameters_or_docstring() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert ping.input_schema == {"type": "object", "additionalProperties": False, "properties": {}}
    assert ping.description == ""
    assert ping.bind(None) == ([], {}) and ping.bind({}) == ([], {})


def test_the_decorated_function_still_works_and_keeps_its_metadata() -> None:
    @tool
    def double(n: int) -> int:
        """Twice n."""
        return n * 2

    assert double(21) == 42
    assert double.__name__ == "double" and double.__doc__ == "Twice n."
    # Re-wrapping a Tool overrides only what is given.
    renamed = tool(name="twice")(double)
    assert (renamed.name, renamed.description, renamed(2)) == ("twice", "Twice n.", 4)


def test_bound_methods_and_callable_objects() -> None:
    class Counter:
        def __init__(self) -> None:
            self.total = 0

        def bump(self, by: int = 1) -> int:
            """Add to the counter."""
            self.total += by
            return self.total

    class Greeter:
        async def __call__(self, name: str) -> str:
            return f"hi {name}"

    counter = Counter()
    bump = tool(counter.bump)
    greet = tool(name="greet")(Greeter())
    assert list(bump.input_schema["properties"]) == ["by"]
    assert greet.is_async and greet.input_schema["required"] == ["name"]


# ----------------------------------------------------------------------------- validation


def test_arguments_are_validated_and_coerced() -> None:
    @tool
    def place(p: Point, n: int, /, label: str = "x", *, tags: list[str] | None = None) -> str:
        """Positional-only parameters are passed by position."""
        return ""

    args, kwargs = place.bind({"p": {"x": "1"}, "n": "7", "tags": ["a"]})
    assert args == [Point(x=1, y=0), 7]
    assert kwargs == {"label": "x", "tags": ["a"]}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "a: Field required"),
        (
            {"a": "one"},
            "a: Input should be a valid integer, unable to parse string as an integer (got 'one')",
        ),
        ({"a": 1, "c": 3}, "c: Extra inputs are not permitted (got 3)"),
        ({"a": 1, "p": {"y": 2}}, "p.x: Field required"),
        (["a"], "arguments: Input should be a valid dictionary"),
    ],
)
def test_bad_arguments_name_every_problem(arguments: Any, message: str) -> None:
    @tool
    def f(a: int, p: Point | None = None) -> None:
        """A tool."""

    with pytest.raises(ToolArgumentsError) as info:
        f.bind(arguments)
    assert str(info.value).startswith("Invalid arguments for tool 'f': ")
    assert message in str(info.value)


def test_several_problems_are_reported_together() -> None:
    @tool
    def f(a: int, b: bool) -> None:
        """A tool."""

    with pytest.raises(ToolArgumentsError, match=r"a: Field required; b: Input should be a valid boolean"):
        f.bind({"b": "maybe"})


# ----------------------------------------------------------------------------- refused definitions


def _no_hint(x):  # type: ignore[no-untyped-def]
    return x


def _star_args(*items: int) -> None:
    pass


def _star_kwargs(**options: str) -> None:
    pass


class _Opaque:
    pass


def _opaque(thing: _Opaque) -> None:
    pass


def _generator(n: int) -> Iterator[int]:
    yield n


def _aliased(x: int = Field(1, alias="y")) -> None:
    pass


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (_no_hint, "Parameter 'x' of tool '_no_hint' has no type hint"),
        (_star_args, "Tool '_star_args' takes *items"),
        (_star_kwargs, "Tool '_star_kwargs' takes **options"),
        (_opaque, "Parameter 'thing' of tool '_opaque' has type"),
        (_generator, "Tool '_generator' is a generator"),
        (_aliased, "sets Field(alias=...)"),
        (lambda x: x, "Invalid tool name '<lambda>'"),
        (42, "A tool must be a function, got int 42"),
    ],
)
def test_bad_definitions_are_refused_when_decorating(fn: Any, message: str) -> None:
    with pytest.raises(OpenCodeConfigError) as info:
        tool(fn)
    assert message in str(info.value)


def test_a_type_without_json_schema_and_an_unresolvable_hint_are_refused() -> None:
    def takes_callback(callback: Callable[[], int]) -> None:
        pass

    def forward(x: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(OpenCodeConfigError, match=r"has type .*Callable.*which has no JSON schema"):
        tool(takes_callback)
    with pytest.raises(OpenCodeConfigError, match=r"Cannot read the signature of tool 'forward'"):
        tool(forward)


@pytest.mark.parametrize("name", ["", "has space", "dotted.name", "x" * 65, "ünï"])
def test_bad_tool_names_are_refused(name: str) -> None:
    def f() -> None:
        pass

    with pytest.raises(OpenCodeConfigError, match="Invalid tool name"):
        tool(name=name)(f)


def test_duplicate_names_and_bad_tool_lists_are_refused() -> None:
    def a() -> None:
        pass

    with pytest.raises(OpenCodeConfigError, match="Two tools are named 'a'"):
        as_tools([a, tool(name="a")(a)])
    with pytest.raises(OpenCodeConfigError, match="tools must be a list of functions"):
        as_tools(a)  # type: ignore[arg-type]
    assert [t.name for t in as_tools([a, tool(name="b")(a)])] == ["a", "b"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": -1}, "port must be an int"),
        ({"port": "80"}, "port must be an int"),
        ({"token": "short"}, "token must be a printable string of at least 16"),
        ({"progress_interval_s": 0}, "progress_interval_s must be a positive number"),
        ({"session_idle_timeout_s": float("inf")}, "session_idle_timeout_s must be"),
        ({"shutdown_timeout_s": None}, "shutdown_timeout_s must be a positive number of seconds, got None"),
        ({"max_threads": 0}, "max_threads must be a positive int"),
        ({"max_recorded_calls": -1}, "max_recorded_calls must be an int >= 0"),
        ({"on_call": "print"}, "on_call must be a function"),
    ],
)
def test_bad_server_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(OpenCodeConfigError, match=message):
        ToolServer([], **kwargs)


# ----------------------------------------------------------------------------- what opencode is given


def test_mcp_config_and_tool_names() -> None:
    @tool
    def add(a: int) -> int:
        """Add."""
        return a

    server = ToolServer([add], token="t" * 20)
    server._bound_port = 4321  # as if started: the entry needs the port
    assert server.mcp_config("py") == {
        "py": {
            "type": "remote",
            "url": "http://127.0.0.1:4321/mcp",
            "headers": {"Authorization": "Bearer " + "t" * 20},
            "enabled": True,
            "oauth": False,
        }
    }
    assert server.mcp_entry(timeout_ms=120_000)["timeout"] == 120_000
    assert server.opencode_names("my-tools") == {"add": "my-tools_add"}
    with pytest.raises(OpenCodeConfigError, match="Invalid MCP server name 'my tools'"):
        server.mcp_config("my tools")
    with pytest.raises(OpenCodeConfigError, match="timeout_ms must be a positive int"):
        server.mcp_entry(timeout_ms=0)


def test_the_url_needs_a_started_server_and_tokens_are_random() -> None:
    first, second = ToolServer([]), ToolServer([])
    with pytest.raises(RuntimeError, match="not started"):
        _ = first.url
    assert first.token != second.token and len(first.token) >= 32


def test_opencode_tool_name_sanitizes_like_opencode() -> None:
    assert opencode_tool_name("py", "add") == "py_add"
    assert opencode_tool_name("my.server", "do it") == "my_server_do_it"


# ----------------------------------------------------------------------------- the optional extra


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_importing_the_package_and_the_tools_module_does_not_import_mcp() -> None:
    proc = _python(
        """
        import sys
        import opencode_wrapper, opencode_wrapper.tools
        print(sorted(m for m in ("mcp", "uvicorn", "starlette", "pydantic") if m in sys.modules))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_missing_extra_is_a_clear_config_error() -> None:
    proc = _python(
        """
        import sys
        sys.modules["mcp"] = None  # as if not installed
        from opencode_wrapper.errors import OpenCodeConfigError
        from opencode_wrapper.tools import tool
        for attempt in (lambda: tool(print), lambda: __import__("opencode_wrapper.tools").tools.ToolServer):
            try:
                attempt()
            except OpenCodeConfigError as exc:
                print(exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "(missing: mcp)" in line and "pip install 'py-opencode-wrapper[tools]'" in line
