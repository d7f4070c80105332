"""A Python function as a tool: its name, description, JSON schema, and argument validation.

Everything here is checked when the tool is defined, so a bad definition fails at import time
of the user's module (an :class:`OpenCodeConfigError`), never in the middle of an agent run.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from opencode_wrapper._mcp._docstring import parse_docstring
from opencode_wrapper.errors import OpenCodeConfigError

#: Tool names opencode passes through unchanged (it replaces anything else with ``_``), and that
#: fit the 64-character function-name limit of the common model APIs.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolArgumentsError(Exception):
    """The arguments of a call do not match the tool's schema (the message says how)."""


@dataclass(frozen=True)
class _Param:
    name: str
    field: str  # the model's internal field name (``p0``...): immune to clashes with BaseModel attributes
    positional_only: bool


class Tool:
    """A function the agent can call, with the JSON schema of its arguments.

    Made by :func:`opencode_wrapper.tools.tool`. Calling the object calls the function directly
    (no validation), so decorated functions keep working in ordinary code.

    Attributes:
        name: the tool's name on the MCP server (opencode shows it to the model as
            ``<server name>_<name>``).
        description: what the model is told the tool does.
        input_schema: the JSON schema of the arguments (an object schema).
        fn: the wrapped function.
        is_async: whether ``fn`` is a coroutine function (else it runs in a worker thread).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        description: str,
        model: type[BaseModel],
        params: tuple[_Param, ...],
        is_async: bool,
    ) -> None:
        self.fn = fn
        self.name = name
        self.description = description
        self.is_async = is_async
        self._model = model
        self._params = params
        self.input_schema: dict[str, Any] = _object_schema(model, params)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, fn={getattr(self.fn, '__qualname__', self.fn)!r})"

    def bind(self, arguments: object) -> tuple[list[Any], dict[str, Any]]:
        """Validate ``arguments`` (the JSON object the model sent) and return ``(args, kwargs)``.

        Raises:
            ToolArgumentsError: naming every bad, missing or unexpected argument.
        """
        try:
            values = self._model.model_validate({} if arguments is None else arguments)
        except ValidationError as exc:
            raise ToolArgumentsError(_describe(self.name, exc)) from None
        args = [getattr(values, p.field) for p in self._params if p.positional_only]
        kwargs = {p.name: getattr(values, p.field) for p in self._params if not p.positional_only}
        return args, kwargs


def _describe(name: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        got = "" if error["type"] == "missing" else f" (got {error['input']!r:.80})"
        problems.append(f"{where}: {error['msg']}{got}")
    return f"Invalid arguments for tool {name!r}: " + "; ".join(problems)


def _object_schema(model: type[BaseModel], params: tuple[_Param, ...]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    schema.pop("title", None)
    generated_titles = {p.field.title() for p in params} | {p.name.replace("_", " ").title() for p in params}
    for prop in schema.get("properties", {}).values():
        if prop.get("title") in generated_titles:
            del prop["title"]
    schema["type"] = "object"
    schema.setdefault("properties", {})
    return schema


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with ``async def __call__``
    return call is not None and inspect.iscoroutinefunction(call)


def _annotate(annotation: Any, metadata: Any) -> Any:
    return Annotated[annotation, metadata]  # nested Annotated flattens: one level, all metadata


def _split_annotation(annotation: Any) -> tuple[Any, str | None, bool]:
    """Split off plain-string metadata: ``(annotation, their text, has a Field description)``."""
    if get_origin(annotation) is not Annotated:
        return annotation, None, False
    base, *metadata = get_args(annotation)
    texts = [m for m in metadata if isinstance(m, str)]
    others = [m for m in metadata if not isinstance(m, str)]
    described = any(isinstance(m, FieldInfo) and m.description for m in others)
    cleaned = functools.reduce(_annotate, others, base)
    return cleaned, " ".join(texts) or None, described


def _field(tool: str, param: inspect.Parameter, annotation: Any, doc: str | None) -> tuple[Any, Any]:
    annotation, text, described = _split_annotation(annotation)
    try:
        pydantic.TypeAdapter(annotation).json_schema()
    except (pydantic.PydanticUserError, TypeError, ValueError, AttributeError) as exc:
        raise OpenCodeConfigError(
            f"Parameter {param.name!r} of tool {tool!r} has type {annotation!r}, which has no JSON schema: "
            f"{str(exc).splitlines()[0].rstrip('.')}. Use JSON-like types (str, int, float, bool, None, "
            "list, dict, Literal, enums, dataclasses, TypedDict, pydantic models)"
        ) from None
    default: Any = param.default
    if isinstance(default, FieldInfo):
        if default.alias is not None:
            raise OpenCodeConfigError(
                f"Parameter {param.name!r} of tool {tool!r} sets Field(alias=...); aliases are not "
                "supported: name the parameter as the model should see it"
            )
        described = described or bool(default.description)
    elif default is inspect.Parameter.empty:
        default = ...
    # The alias carries the parameter's name (the field itself is ``p<i>``); a FieldInfo given as
    # the default is merged over this one by pydantic, so its own settings win.
    described_here = None if described else (text or doc)
    # Only attributes actually passed count as set: an explicit description=None would win the merge.
    ours = Field(alias=param.name, description=described_here) if described_here else Field(alias=param.name)
    return Annotated[annotation, ours], default


def make_tool(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None) -> Tool:
    """Build a :class:`Tool` from ``fn``; refuse a definition that cannot be a tool.

    Raises:
        OpenCodeConfigError: ``fn`` is not callable, is a generator, takes ``*args``/``**kwargs``,
            has a parameter without a type hint or with a type that has no JSON schema, or the
            name is not 1-64 characters of ``A-Z a-z 0-9 _ -``.
    """
    if isinstance(fn, Tool):
        name = name if name is not None else fn.name
        description = description if description is not None else fn.description
        fn = fn.fn
    if not callable(fn):
        raise OpenCodeConfigError(f"A tool must be a function, got {type(fn).__name__} {fn!r}")
    tool_name = name if name is not None else getattr(fn, "__name__", "")
    if not isinstance(tool_name, str) or not TOOL_NAME.match(tool_name):
        raise OpenCodeConfigError(
            f"Invalid tool name {tool_name!r}: use 1-64 characters from A-Z, a-z, 0-9, '_' and '-' "
            "(set it with @tool(name=...))"
        )
    if description is not None and not isinstance(description, str):
        raise OpenCodeConfigError(f"Tool description must be a string, got {description!r}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise OpenCodeConfigError(f"Tool {tool_name!r} is a generator; a tool must return its result")
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, ValueError, SyntaxError) as exc:
        raise OpenCodeConfigError(f"Cannot read the signature of tool {tool_name!r}: {exc}") from None
    doc = parse_docstring(inspect.getdoc(fn))
    fields: dict[str, Any] = {}
    params: list[_Param] = []
    for index, param in enumerate(signature.parameters.values()):
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            star = "*" if param.kind is inspect.Parameter.VAR_POSITIONAL else "**"
            raise OpenCodeConfigError(
                f"Tool {tool_name!r} takes {star}{param.name}; a tool needs named, typed parameters "
                "(the model sends a JSON object)"
            )
        if param.annotation is inspect.Parameter.empty:
            raise OpenCodeConfigError(
                f"Parameter {param.name!r} of tool {tool_name!r} has no type hint; every parameter needs one "
                "(it becomes the JSON schema the model sees)"
            )
        field_name = f"p{index}"
        fields[field_name] = _field(tool_name, param, param.annotation, doc.params.get(param.name))
        params.append(_Param(param.name, field_name, param.kind is inspect.Parameter.POSITIONAL_ONLY))
    try:
        model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        model.model_json_schema(by_alias=True)
    except (pydantic.PydanticUserError, TypeError, ValueError) as exc:
        raise OpenCodeConfigError(f"Cannot build the argument schema of tool {tool_name!r}: {exc}") from None
    text = description if description is not None else doc.description
    return Tool(
        fn, name=tool_name, description=text, model=model, params=tuple(params), is_async=_is_async(fn)
    )


def as_tools(items: Iterable[Tool | Callable[..., Any]]) -> tuple[Tool, ...]:
    """``items`` as :class:`Tool` objects (plain functions go through ``tool()``), names unique.

    Raises:
        OpenCodeConfigError: not an iterable of functions, a bad definition, or a repeated name.
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable) or callable(items):
        raise OpenCodeConfigError(f"tools must be a list of functions, got {type(items).__name__} {items!r}")
    tools = tuple(item if isinstance(item, Tool) else make_tool(item) for item in items)
    seen: set[str] = set()
    for t in tools:
        if t.name in seen:
            raise OpenCodeConfigError(
                f"Two tools are named {t.name!r}; give one another name with @tool(name=...)"
            )
        seen.add(t.name)
    return tools


def check_server_name(name: object) -> None:
    """Refuse an MCP server name that opencode would rewrite (it keeps only ``A-Z a-z 0-9 _ -``)."""
    if (
        not isinstance(name, str)
        or not name
        or not all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    ):
        raise OpenCodeConfigError(
            f"Invalid MCP server name {name!r}: use letters, digits, '_' and '-' (opencode shows the tools "
            "to the model as '<name>_<tool>')"
        )
