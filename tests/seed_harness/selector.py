"""Which seed tests use only the public API of ``opencode_wrapper``: decided from the source with ``ast``.

The seed's tests were written against the seed's implementation. A test that reaches into private
names tests that implementation, not the interface users switch from, so it says nothing about a
drop-in replacement. The rules, applied to each test module independently:

1. **Private import, whole module out.** The module imports a private name or module of the
   package at import time (``from opencode_wrapper.client import _readline_unlimited``,
   ``import opencode_wrapper._http``, ``from opencode_wrapper._x import y``): every test of the
   module is out, because the module cannot even be imported where that private name does not
   exist. A name is private when any dotted component starts with ``_`` and is not a dunder
   (``__version__`` is public).
2. **Private reference, test out.** A test is out when it, or anything of its module it uses
   transitively, references a private name of the package. "Uses" follows: names the code loads
   that are module-level functions, classes or assigned names of the module; fixtures the test (or a
   used fixture) requests by parameter, ``usefixtures`` or ``autouse``, when defined in the module
   (or in the test's class). A private reference is any of:

   * a string that is a dotted path into the package with a private component
     (``monkeypatch.setattr("opencode_wrapper.session._OpenCodeServer", ...)``,
     ``patch("opencode_wrapper.client._x")``, ``"opencode_wrapper.x:_y"``);
   * an attribute chain rooted at a name bound to the package (``opencode_wrapper.server._free_port``);
   * ``obj._name`` on any other object, unless ``_name`` is declared by the test module itself (a
     method or class attribute of a class it defines, or assigned as ``self._name`` in one): the
     module's own fakes may keep private state, the package's objects may not be poked at
     (``session._log_fh``, ``srv._proc = ...``). An attribute of a name bound to a *foreign* import
     (``asyncio._x``, ``sys._getframe``) is not the package's and does not count;
   * ``setattr``/``getattr``/``hasattr``/``delattr`` (or a ``.setattr``/``.delattr``/``.object``
     call such as ``monkeypatch.setattr(obj, "_x", v)`` or ``patch.object(obj, "_x")``) naming a
     private attribute as a string, with the same exemption for names the module declares;
   * an import of a private name of the package inside a function (same test as rule 1).

The analysis over-approximates "uses" (a name loaded anywhere in a function counts, shadowing is
ignored), so when unsure it excludes. Everything it cannot attribute to the package (``self._q`` on
the module's own fake) is kept. Markers are read too: a test marked ``integration`` (on the
function, its class, or the module's ``pytestmark``) is reported as such, so the caller can run it
with the fixtures that integration tests need.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from seed_harness.astutil import (
    FunctionNode,
    attr_chain_root,
    dotted_name,
    env_reads,
    imports,
    is_fixture,
    is_mark,
    parametrized,
    params,
    usefixtures,
    walk,
)

PACKAGE = "opencode_wrapper"

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[.:][A-Za-z_][A-Za-z0-9_]*)+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ATTR_CALLS = frozenset({"setattr", "getattr", "hasattr", "delattr", "object"})
#: The gate reported for a ``pytest.skip(...)`` that no ``if`` guards.
UNCONDITIONAL_SKIP = "<unconditional skip>"


def is_private(component: str) -> bool:
    """``_name`` is private; ``__dunder__`` and public names are not."""
    return component.startswith("_") and not (component.startswith("__") and component.endswith("__"))


def private_dotted(path: str) -> bool:
    """Whether ``path`` (``a.b._c`` or ``a.b:_c``) has a private component."""
    return any(is_private(part) for part in re.split(r"[.:]", path))


def in_package(path: str) -> bool:
    """Whether the dotted ``path`` names the package or something inside it."""
    return path == PACKAGE or path.startswith((PACKAGE + ".", PACKAGE + ":"))


@dataclass(frozen=True)
class Verdict:
    """What the selector decided for one test function (all its parametrizations).

    Attributes:
        nodeid: ``<relative path>::<name>`` or ``<relative path>::<Class>::<name>``.
        selected: whether the test uses only public names.
        reason: why it is out (``None`` when selected).
        integration: whether it carries the ``integration`` marker.
        fixtures: the fixtures it needs that the module does not define (e.g. ``opencode_path``).
        gates: the environment variables deciding whether the test skips itself (read in the
            condition of a ``pytest.skip`` or in a ``skipif`` mark, directly or through the module's
            helpers); :data:`UNCONDITIONAL_SKIP` for a skip with no condition.
    """

    nodeid: str
    selected: bool
    reason: str | None
    integration: bool
    fixtures: tuple[str, ...] = ()
    gates: tuple[str, ...] = ()


@dataclass
class _Unit:
    """A module-level (or class-level) definition the tests may use."""

    name: str
    nodes: list[ast.AST]
    fixture_params: list[str] = field(default_factory=list)


def _fixture_unit(fn: FunctionNode, extra_marks: Iterable[ast.expr] = ()) -> _Unit:
    """A fixture or test: the fixtures it requests are its parameters (minus parametrized ones)."""
    marks = [*fn.decorator_list, *extra_marks]
    requested = [p for p in params(fn) if p not in parametrized(marks)]
    return _Unit(fn.name, [fn], requested + usefixtures(marks))


class _Module:
    """The facts about one test module that the rules need."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.package_names: dict[str, str] = {}  # local name -> dotted path in the package
        self.foreign_names: set[str] = set()
        self.private_imports: list[str] = []
        self.declared: set[str] = set()
        self.units: dict[str, _Unit] = {}
        self.fixtures: dict[str, _Unit] = {}
        self.autouse: list[str] = []
        self.module_marks: list[ast.expr] = []
        self.parents: dict[int, ast.AST] = {
            id(child): parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)
        }
        self._scan_imports()
        self._scan_declared()
        self._scan_units()

    def _eager_statements(self) -> Iterator[ast.stmt]:
        """Top-level statements that run at import (descending into if/try/with, not into defs)."""
        stack: list[ast.stmt] = list(self.tree.body)
        while stack:
            stmt = stack.pop(0)
            yield stmt
            if isinstance(stmt, (ast.If, ast.Try, ast.With, ast.AsyncWith)):
                for block in ("body", "orelse", "finalbody"):
                    stack.extend(getattr(stmt, block, []))
                for handler in getattr(stmt, "handlers", []):
                    stack.extend(handler.body)

    def _scan_imports(self) -> None:
        for stmt in self._eager_statements():
            for target, bound in imports(stmt):
                if in_package(target):
                    self.package_names[bound] = target
                    if private_dotted(target):
                        self.private_imports.append(target)
                else:
                    self.foreign_names.add(bound)

    def _scan_declared(self) -> None:
        for cls in (n for n in ast.walk(self.tree) if isinstance(n, ast.ClassDef)):
            for item in cls.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self.declared.add(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    self.declared.update(t.id for t in targets if isinstance(t, ast.Name))
            for node in ast.walk(cls):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "self"
                ):
                    self.declared.add(node.attr)

    def _scan_units(self) -> None:
        for stmt in self.tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._add_function(stmt, self.units, self.fixtures, self.autouse)
            elif isinstance(stmt, ast.ClassDef):
                self.units[stmt.name] = _Unit(stmt.name, [stmt])
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    for name in (n.id for n in ast.walk(target) if isinstance(n, ast.Name)):
                        self.units[name] = _Unit(name, [stmt])
                        if name == "pytestmark" and stmt.value is not None:
                            value = stmt.value
                            marks = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
                            self.module_marks.extend(marks)

    @property
    def import_violation(self) -> str | None:
        """Rule 1's reason, or ``None`` when the module imports nothing private of the package."""
        if not self.private_imports:
            return None
        return "module imports private " + ", ".join(self.private_imports)

    @staticmethod
    def _add_function(
        fn: FunctionNode,
        units: dict[str, _Unit],
        fixtures: dict[str, _Unit],
        autouse: list[str],
    ) -> None:
        fixture, name, auto = is_fixture(fn)
        units[fn.name] = _Unit(fn.name, [fn])
        if fixture:
            fixtures[name] = _fixture_unit(fn)
            if auto:
                autouse.append(name)

    def skip_gates(self, nodes: Iterable[ast.AST], units: dict[str, _Unit]) -> set[str]:
        """The env vars read by the conditions of the skips inside ``nodes`` (through helpers too)."""
        conditions: list[ast.AST] = []
        gates: set[str] = set()
        for node in walk(nodes):
            if isinstance(node, ast.Call) and dotted_name(node.func) in ("pytest.skip", "skip"):
                guards = self._guards(node)
                conditions += guards
                if not guards:
                    gates.add(UNCONDITIONAL_SKIP)
            elif isinstance(node, ast.Call) and is_mark(node, "skipif"):
                conditions += [*node.args, *(kw.value for kw in node.keywords if kw.arg != "reason")]
        seen: set[int] = set()
        while conditions:
            condition = conditions.pop()
            if id(condition) in seen:
                continue
            seen.add(id(condition))
            gates |= env_reads([condition])
            conditions += [n for u in _loaded_units([condition], units) for n in u.nodes]
        return gates

    def _guards(self, node: ast.AST) -> list[ast.expr]:
        """The ``if``/``while`` conditions (and ternary tests) enclosing ``node``."""
        out: list[ast.expr] = []
        current = self.parents.get(id(node))
        while current is not None and not isinstance(current, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if isinstance(current, (ast.If, ast.While, ast.IfExp)):
                out.append(current.test)
            current = self.parents.get(id(current))
        return out

    def private_references(self, nodes: Iterable[ast.AST]) -> list[str]:
        """Descriptions of the package-private references inside ``nodes`` (rule 2)."""
        found: list[str] = []
        for node in walk(nodes):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found += [
                    f"imports private {t}" for t, _ in imports(node) if in_package(t) and private_dotted(t)
                ]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.strip()
                if _DOTTED.fullmatch(text) and in_package(text) and private_dotted(text):
                    found.append(f"names private {text!r}")
            elif isinstance(node, ast.Attribute) and is_private(node.attr):
                found += self._private_attribute(node)
            elif isinstance(node, ast.Call):
                found += self._private_attr_call(node)
        return found

    def _private_attribute(self, node: ast.Attribute) -> list[str]:
        root = attr_chain_root(node)
        if isinstance(root, ast.Name) and root.id in self.package_names:
            dotted = dotted_name(node) or node.attr
            resolved = self.package_names[root.id] + dotted[len(root.id) :]
            return [f"uses private {resolved}"]
        if isinstance(root, ast.Name) and root.id in self.foreign_names:
            return []
        if node.attr in self.declared:
            return []
        return [f"uses private attribute .{node.attr}"]

    def _private_attr_call(self, node: ast.Call) -> list[str]:
        func = node.func
        name = (
            func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        )
        if name not in _ATTR_CALLS or (name == "object" and not isinstance(func, ast.Attribute)):
            return []
        candidates = list(node.args[1:2]) + [
            kw.value for kw in node.keywords if kw.arg in ("name", "attribute")
        ]
        out = []
        for arg in candidates:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                continue
            if _IDENT.fullmatch(arg.value) and is_private(arg.value) and arg.value not in self.declared:
                out.append(f"{name}(..., {arg.value!r})")
        return out


def _test_targets(tree: ast.Module) -> Iterator[tuple[str, FunctionNode, ast.ClassDef | None]]:
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name.startswith("test"):
            yield stmt.name, stmt, None
        elif isinstance(stmt, ast.ClassDef) and stmt.name.startswith("Test"):
            for item in stmt.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    yield f"{stmt.name}::{item.name}", item, stmt


def select_source(source: str, relpath: str) -> list[Verdict]:
    """The verdict for every test function of one module's ``source`` (``relpath`` prefixes node ids)."""
    module = _Module(ast.parse(source))
    verdicts = []
    for name, fn, cls in _test_targets(module.tree):
        nodeid = f"{relpath}::{name}"
        marks = [*module.module_marks, *fn.decorator_list, *(cls.decorator_list if cls else [])]
        integration = any(is_mark(m, "integration") for m in marks)
        reach = _reach(module, fn, cls)
        reason = module.import_violation or reach.reason
        verdicts.append(
            Verdict(
                nodeid,
                reason is None,
                reason,
                integration,
                tuple(sorted(reach.external)),
                tuple(sorted(reach.gates)),
            )
        )
    return verdicts


@dataclass
class _Reach:
    """What a test reaches: its first private reference, outside fixtures, env gates of its skips."""

    reason: str | None = None
    external: set[str] = field(default_factory=set)
    gates: set[str] = field(default_factory=set)


def _reach(module: _Module, fn: FunctionNode, cls: ast.ClassDef | None) -> _Reach:
    units, fixtures, autouse = dict(module.units), dict(module.fixtures), list(module.autouse)
    class_nodes: list[ast.AST] = []
    if cls is not None:
        # The class body's own statements (decorators, bases, attributes) run for every method.
        class_nodes = [*cls.decorator_list, *cls.bases]
        class_nodes += [s for s in cls.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for item in cls.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item is not fn:
                fixture, name, auto = is_fixture(item)
                if fixture:
                    fixtures[name] = _fixture_unit(item)
                    if auto:
                        autouse.append(name)
    start = _fixture_unit(fn, [*module.module_marks, *(cls.decorator_list if cls else [])])
    start.nodes += [*module.module_marks, *class_nodes]
    start.fixture_params += autouse
    reach = _Reach()
    seen: set[int] = set()
    queue: list[tuple[_Unit, str]] = [(start, "")]
    while queue:
        unit, via = queue.pop(0)
        if id(unit) in seen:
            continue
        seen.add(id(unit))
        refs = module.private_references(unit.nodes)
        if refs and reach.reason is None:
            reach.reason = refs[0] + (f" (via {via})" if via else "")
        reach.gates |= module.skip_gates(unit.nodes, units)
        for param in unit.fixture_params:
            if param in fixtures:
                queue.append((fixtures[param], _chain(via, f"fixture {param}")))
            else:
                reach.external.add(param)
        for used in _loaded_units(unit.nodes, units):
            if used is not unit:
                queue.append((used, _chain(via, used.name)))
    return reach


def _loaded_units(nodes: Iterable[ast.AST], units: dict[str, _Unit]) -> Iterator[_Unit]:
    for node in walk(nodes):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in units:
            yield units[node.id]


def _chain(via: str, step: str) -> str:
    return f"{via} -> {step}" if via else step


def select_directory(tests_dir: Path, root: Path) -> list[Verdict]:
    """Verdicts for every ``test_*.py`` directly in ``tests_dir``; node ids are relative to ``root``."""
    verdicts: list[Verdict] = []
    for path in sorted(tests_dir.glob("test_*.py")):
        relpath = path.relative_to(root).as_posix()
        verdicts += select_source(path.read_text(encoding="utf-8"), relpath)
    return verdicts
