"""Finding the code blocks of Markdown files, their markers, and the examples they make."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

PYTHON_LANGS = frozenset({"python", "py"})
CONSOLE_LANGS = frozenset({"console", "shell-session"})
SHELL_LANGS = frozenset({"bash", "sh", "shell", "zsh"})

_NOT_RUN = re.compile(r"^<!--\s*not-run\s*(?::\s*(?P<reason>.*?))?\s*-->$", re.DOTALL)
_CONTINUES = re.compile(r"^<!--\s*continues\s*-->$")
_MARKER_LIKE = re.compile(r"^<!--\s*(not-run|continues)\b")

# A `provider/model` string given to a config or a command: model="a/b", -m a/b, --model=a/b.
_MODEL_PATTERNS = (
    re.compile(r"""\bmodel\s*=\s*(["'])(?P<m>[A-Za-z0-9][\w.-]*/[^"'\s]+)\1"""),
    re.compile(r"""(?:^|\s)(?:-m|--model)(?:\s+|=)(["']?)(?P<m>[A-Za-z0-9][\w.-]*/[^"'\s]+)\1"""),
)


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    path: Path  # the Markdown file, absolute
    rel: str  # its path relative to the repository, for ids and reports
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None = None  # the reason given by a not-run marker
    continues: bool = False

    @property
    def id(self) -> str:
        return f"{self.rel}:{self.line}"

    @property
    def kind(self) -> str:
        if self.lang in PYTHON_LANGS:
            return "python"
        if self.lang in CONSOLE_LANGS:
            return "console"
        if self.lang in SHELL_LANGS:
            return "shell"
        return "other"


@dataclass(frozen=True)
class Example:
    """One program: a Python block, with the blocks that continue it."""

    blocks: tuple[Block, ...]

    @property
    def id(self) -> str:
        first = self.blocks[0]
        return first.id + "".join(f"+{b.line}" for b in self.blocks[1:])

    @property
    def path(self) -> Path:
        return self.blocks[0].path

    def source(self) -> str:
        """The blocks' code with every line at its line number in the Markdown file."""
        lines: list[str] = []
        for block in self.blocks:
            start = block.line  # the code's first line is the line after the fence (0-based: line)
            lines.extend([""] * (start - len(lines)))
            lines.extend(block.code.splitlines())
        return "\n".join(lines) + "\n"

    def models(self) -> set[str]:
        return models_in("\n".join(b.code for b in self.blocks))


def models_in(code: str) -> set[str]:
    """The ``provider/model`` strings that ``code`` gives as a model."""
    found: set[str] = set()
    for pattern in _MODEL_PATTERNS:
        found.update(match.group("m") for match in pattern.finditer(code))
    return found


@dataclass
class DocInventory:
    """Every block of a set of files, sorted into what runs, what is checked and what is not."""

    blocks: list[Block] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    consoles: list[Block] = field(default_factory=list)  # console blocks that are checked
    problems: list[str] = field(default_factory=list)  # malformed markers

    @property
    def not_run(self) -> list[Block]:
        return [b for b in self.blocks if b.not_run is not None]

    @property
    def not_checked(self) -> list[tuple[Block, str]]:
        """Shell and console blocks that are not checked, with why."""
        checked = {b.id for b in self.consoles}
        out = []
        for block in self.blocks:
            if block.not_run is not None or block.id in checked:
                continue
            if block.kind == "console":
                out.append((block, "console output without --offline (needs a real provider or machine)"))
            elif block.kind == "shell":
                out.append((block, "shell commands (set-up or long-running), not checked"))
        return out

    def by_id(self) -> dict[str, Example | Block]:
        items: dict[str, Example | Block] = {e.id: e for e in self.examples}
        items.update({b.id: b for b in self.consoles})
        return items


def doc_files(root: Path) -> list[Path]:
    """README.md and every Markdown file under docs/ (sorted)."""
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    docs = root / "docs"
    if docs.is_dir():
        files.extend(sorted(p for p in docs.rglob("*.md") if p.is_file()))
    return files


def parse_blocks(path: Path, rel: str, problems: list[str] | None = None) -> list[Block]:
    """The fenced code blocks of one Markdown file, with the markers right before them."""
    problems = [] if problems is None else problems
    tokens = MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    blocks: list[Block] = []
    for index, token in enumerate(tokens):
        if token.type != "fence" or token.map is None:
            continue
        lang = (token.info.split() or [""])[0].lower()
        not_run: str | None = None
        continues = False
        previous = tokens[index - 1] if index else None
        if previous is not None and previous.type == "html_block":
            for comment in re.findall(r"<!--.*?-->", previous.content, re.DOTALL):
                if match := _NOT_RUN.match(comment):
                    reason = (match.group("reason") or "").strip()
                    if not reason:
                        problems.append(f"{rel}:{token.map[0] + 1}: not-run marker without a reason")
                    not_run = reason
                elif _CONTINUES.match(comment):
                    continues = True
                elif _MARKER_LIKE.match(comment):
                    problems.append(f"{rel}:{token.map[0] + 1}: malformed marker {comment!r}")
        blocks.append(Block(path, rel, token.map[0] + 1, lang, token.content, not_run, continues))
    return blocks


def _is_checked_console(block: Block) -> bool:
    return block.kind == "console" and any("--offline" in cmd for cmd, _ in console_commands(block.code))


def console_commands(code: str) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` for each ``$ command`` of a console block.

    A command line ending in a backslash continues on the next line.
    """
    out: list[tuple[str, list[str]]] = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if out:
                out[-1][1].append(line)
            i += 1
            continue
        command = line[2:]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command[:-1].rstrip() + " " + lines[i].strip()
        out.append((command.strip(), []))
        i += 1
    return out


def collect(files: Iterable[Path], root: Path) -> DocInventory:
    """Parse ``files`` and group their blocks into examples (see the package docstring)."""
    inventory = DocInventory()
    for path in files:
        resolved = path.resolve()
        try:
            rel = str(resolved.relative_to(root.resolve()))
        except ValueError:  # a file outside the repository: named by its full path
            rel = str(resolved)
        blocks = parse_blocks(resolved, rel, inventory.problems)
        inventory.blocks.extend(blocks)
        chain: list[Block] = []
        for block in blocks:
            if block.kind != "python":
                if block.continues:
                    inventory.problems.append(f"{block.id}: 'continues' only joins Python blocks")
                if block.not_run is None and _is_checked_console(block):
                    inventory.consoles.append(block)
                continue
            if block.not_run is not None:
                if block.continues:
                    inventory.problems.append(f"{block.id}: a block cannot be both not-run and continues")
                continue
            if block.continues:
                if not chain:
                    inventory.problems.append(
                        f"{block.id}: 'continues' but no runnable Python block before it"
                    )
                    continue
                chain.append(block)
                inventory.examples[-1] = Example(tuple(chain))
                continue
            chain = [block]
            inventory.examples.append(Example((block,)))
    return inventory


def ids(items: Sequence[Example | Block]) -> list[str]:
    return [item.id for item in items]
