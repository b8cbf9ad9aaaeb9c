"""The callbacks parser and the emulator's planner stay pure: only their glue modules do I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "freedompay_async"

# Modules that decide without I/O: no aiohttp, asyncio or clock, no async def.
PURE_PERIPHERY = (
    "callbacks/_fields.py",
    "callbacks/_models.py",
    "callbacks/_parse.py",
    "callbacks/_reply.py",
    "testing/_checks.py",
    "testing/_fault.py",
    "testing/_fault_queue.py",
    "testing/_planner.py",
    "testing/_records.py",
    "testing/_scenario.py",
    "testing/_wire.py",
)
# The only callbacks module allowed to import aiohttp.
CALLBACKS_GLUE = "callbacks/_handler.py"
FORBIDDEN = {"aiohttp", "asyncio", "time"}


def _runtime_imports(source: str, *, typing_too: bool = False) -> set[str]:
    """Top-level modules *source* imports (outside `if TYPE_CHECKING:` unless typing_too)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            guarded = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            if guarded and not typing_too:
                for item in child.orelse:
                    visit(item)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name.split(".")[0] for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.add(child.module.split(".")[0])
            visit(child)

    visit(ast.parse(source))
    return found


def _defines_async(source: str) -> bool:
    return any(isinstance(node, ast.AsyncFunctionDef) for node in ast.walk(ast.parse(source)))


@pytest.mark.parametrize("relative", PURE_PERIPHERY)
def test_pure_periphery_module_does_no_io(relative: str) -> None:
    """A parser or planner module imports no aiohttp, asyncio or time and defines no async def."""
    source = (PACKAGE / relative).read_text(encoding="utf-8")
    assert not _runtime_imports(source) & FORBIDDEN, relative
    assert not _defines_async(source), relative


def test_only_the_handler_imports_aiohttp_among_callbacks() -> None:
    """Every callbacks module but the aiohttp.web handler is free of aiohttp, even for typing."""
    modules = sorted((PACKAGE / "callbacks").glob("*.py"))
    assert len(modules) > 2
    for path in modules:
        relative = f"callbacks/{path.name}"
        source = path.read_text(encoding="utf-8")
        if relative == CALLBACKS_GLUE:
            assert "aiohttp" in _runtime_imports(source)
        else:
            assert "aiohttp" not in _runtime_imports(source, typing_too=True), relative


def test_the_checker_sees_io_when_present() -> None:
    """The checker reports aiohttp, asyncio and async def in a module that has them."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import asyncio\n"
        "from aiohttp import web\n"
        "if TYPE_CHECKING:\n"
        "    import time\n"
        "async def handler() -> None: ...\n"
    )
    assert _runtime_imports(source) & FORBIDDEN == {"aiohttp", "asyncio"}
    assert "time" in _runtime_imports(source, typing_too=True)
    assert _defines_async(source)
