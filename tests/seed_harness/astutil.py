"""Facts about Python and pytest syntax that the seed-test selector reads off an ``ast`` tree."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def walk(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node of every tree in ``nodes``."""
    for node in nodes:
        yield from ast.walk(node)


def attr_chain_root(node: ast.expr) -> ast.expr:
    """``a`` for ``a.b.c`` (the expression under the attribute accesses)."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


def dotted_name(node: ast.expr) -> str | None:
    """``"a.b.c"`` for ``a.b.c``; ``None`` when the chain is not rooted at a plain name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def is_mark(decorator: ast.expr, name: str) -> bool:
    """Whether ``decorator`` is ``pytest.mark.<name>`` (called or not)."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    dotted = dotted_name(target)
    return dotted is not None and (dotted.endswith(f"mark.{name}") or dotted == name)


def is_fixture(fn: FunctionNode) -> tuple[bool, str, bool]:
    """(is a fixture, its name, autouse)."""
    for decorator in fn.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        dotted = dotted_name(target)
        if dotted not in ("pytest.fixture", "fixture"):
            continue
        name, autouse = fn.name, False
        if isinstance(decorator, ast.Call):
            for kw in decorator.keywords:
                if (
                    kw.arg == "name"
                    and isinstance(kw.value, ast.Constant)
                    and isinstance(kw.value.value, str)
                ):
                    name = kw.value.value
                if kw.arg == "autouse" and isinstance(kw.value, ast.Constant):
                    autouse = bool(kw.value.value)
        return True, name, autouse
    return False, fn.name, False


def params(fn: FunctionNode) -> list[str]:
    """The parameter names of ``fn`` except ``self``/``cls`` (the fixtures a test or fixture asks for)."""
    args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
    return [a.arg for a in args if a.arg not in ("self", "cls")]


def parametrized(decorators: Iterable[ast.expr]) -> set[str]:
    """Argument names given by ``parametrize`` marks (they are not fixtures)."""
    names: set[str] = set()
    for decorator in decorators:
        if isinstance(decorator, ast.Call) and is_mark(decorator, "parametrize") and decorator.args:
            first = decorator.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.update(n.strip() for n in first.value.split(","))
            elif isinstance(first, (ast.List, ast.Tuple)):
                names.update(
                    e.value for e in first.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    return names


def usefixtures(decorators: Iterable[ast.expr]) -> list[str]:
    """Fixture names requested by ``pytest.mark.usefixtures("...")`` marks."""
    names = []
    for decorator in decorators:
        if isinstance(decorator, ast.Call) and is_mark(decorator, "usefixtures"):
            names += [
                a.value for a in decorator.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
            ]
    return names


def imports(stmt: ast.stmt | ast.AST) -> list[tuple[str, str]]:
    """(dotted target, bound local name) for an import statement; ``[]`` for anything else."""
    if isinstance(stmt, ast.Import):
        return [(a.name, a.asname or a.name.split(".")[0]) for a in stmt.names] if stmt.names else []
    if isinstance(stmt, ast.ImportFrom):
        if stmt.level or stmt.module is None:
            return []
        out = []
        for alias in stmt.names:
            target = stmt.module if alias.name == "*" else f"{stmt.module}.{alias.name}"
            out.append((target, alias.asname or alias.name))
        return out
    return []


def env_reads(nodes: Iterable[ast.AST]) -> set[str]:
    """Environment variable names read as ``os.environ.get("X")``, ``os.getenv("X")``,
    ``os.environ["X"]`` or ``"X" in os.environ``."""
    names: set[str] = set()

    def const(node: ast.AST | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)

    for node in walk(nodes):
        if isinstance(node, ast.Call):
            dotted = dotted_name(node.func) or ""
            if (dotted.endswith("environ.get") or dotted in ("os.getenv", "getenv")) and node.args:
                const(node.args[0])
        elif isinstance(node, ast.Subscript) and (dotted_name(node.value) or "").endswith("environ"):
            const(node.slice)
        elif (
            isinstance(node, ast.Compare)
            and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
            and any((dotted_name(c) or "").endswith("environ") for c in node.comparators)
        ):
            const(node.left)
    return names
