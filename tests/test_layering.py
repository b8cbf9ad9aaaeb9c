"""The import direction of the layers (design §1.3), checked by parsing every module with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "freedompay_async"

# module -> internal modules it may import (names relative to the package).
ALLOWED: dict[str, set[str]] = {
    "__init__": {
        "_client",
        "_config",
        "_exceptions",
        "_models",
        "_retry",
        "_batch",
        "_classic_models",
        "_classic",
        "_classic_errors",
    },
    "_call": {"_config", "_exceptions", "_models", "_protocol", "_retry", "settlement"},
    "_guard": {"_exceptions", "_models"},
    "_events": {"_call", "_retry"},
    "_exceptions": {"_models", "masking"},  # _models: type-checking only
    "_models": {"_exceptions", "masking"},
    "_config": {"_exceptions"},
    "signing": set(),
    "masking": set(),
    "settlement": {"_models", "_exceptions"},
    "_protocol": {
        "signing",
        "_config",
        "_models",
        "_exceptions",
        "_validate",
        "masking",
        "_classic_models",
    },
    "_validate": {"_models", "_exceptions"},
    "_inflate": set(),
    "_decode": {"_protocol", "_models", "_exceptions", "masking", "signing", "_classic_models"},
    "_classic_models": {"masking"},
    "_classic_fields": {"_exceptions"},
    "_classic": {
        "signing",
        "_config",
        "_exceptions",
        "_protocol",
        "_decode",
        "_classic_fields",
        "_classic_models",
    },
    "_classic_settle": {"_classic_models", "_exceptions", "settlement"},
    "_classic_errors": {"_exceptions"},
    "_classic_call": {
        "_call",
        "_classic_errors",
        "_classic_models",
        "_classic_outcome",
        "_classic_settle",
        "_config",
        "_exceptions",
        "_retry",
        "settlement",
    },
    "_classic_outcome": {"_classic_errors", "_classic_models", "_classic_settle"},
    "_classic_driver": {
        "_call",
        "_classic",
        "_classic_call",
        "_classic_errors",
        "_classic_models",
        "_classic_outcome",
        "_config",
        "_events",
        "_exceptions",
        "_guard",
        "_protocol",
        "_retry",
        "_transport",
    },
    "_classic_client": {"_classic_driver", "_classic_models", "_config"},
    "_retry": {"_config", "_models", "_exceptions"},
    "_transport": {"_protocol", "_config", "_exceptions", "_inflate", "masking", "_gate"},
    "_gate": set(),
    "_batch": {"_models", "_exceptions"},
    "_client": {
        "_batch",
        "_call",
        "_classic",
        "_classic_client",
        "_classic_driver",
        "_events",
        "_guard",
        "_config",
        "_decode",
        "_exceptions",
        "_models",
        "_protocol",
        "_retry",
        "_transport",
    },
    "callbacks": {"signing", "_decode", "_exceptions"},
    "csvinput": {"__init__"},
    "records": {"__init__", "masking"},
    "cli": {
        "__init__",
        "testing",
        "contrib",
        "csvinput",
        "records",
        "masking",
        "settlement",
        "_classic_models",
        "_classic_settle",
    },
    "__main__": {"cli"},
}
PURE = {
    "_exceptions",
    "_models",
    "_config",
    "signing",
    "masking",
    "settlement",
    "_protocol",
    "_decode",
    "_retry",
    "_validate",
    "_inflate",
    "_classic",
    "_classic_fields",
    "_classic_models",
    "_classic_settle",
    "_classic_errors",
    "_classic_call",
    "_classic_outcome",
    "_call",
}
FORBIDDEN_IN_PURE = {"asyncio", "aiohttp", "time", "random"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts)


def _imports(tree: ast.Module, module: str) -> list[tuple[str, bool]]:
    """Return (imported module, under TYPE_CHECKING) pairs, absolute names."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            guarded = typing_only
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for item in child.body:
                    visit_node(item, typing_only=True)
                for item in child.orelse:
                    visit_node(item, typing_only=typing_only)
                continue
            visit_node(child, guarded)

    def visit_node(child: ast.AST, typing_only: bool) -> None:
        if isinstance(child, ast.Import):
            found.extend((alias.name, typing_only) for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = module.split(".")[: -child.level]
                prefix = ".".join(["freedompay_async", *base])
                name = f"{prefix}.{child.module}" if child.module else prefix
            else:
                name = child.module or ""
            if name == "freedompay_async":
                for alias in child.names:
                    is_module = (PACKAGE / f"{alias.name}.py").exists() or (
                        PACKAGE / alias.name
                    ).is_dir()
                    target = f"freedompay_async.{alias.name}" if is_module else name
                    found.append((target, typing_only))
            else:
                found.append((name, typing_only))
        visit(child, typing_only)

    visit(tree, typing_only=False)
    return found


def _internal(name: str) -> str | None:
    if not name.startswith("freedompay_async"):
        return None
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_imports_follow_the_layer_table(path: Path) -> None:
    """Every package module imports only the internal modules its layer allows."""
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = module.split(".")[0]
    imports = _imports(tree, module)
    for name, typing_only in imports:
        target = _internal(name)
        if target is None:
            continue
        if top == "testing":
            assert target in {"signing", "testing", "__init__"}, (
                f"testing imports private module {name}: the emulator must stay independent"
            )
            continue
        if top == "contrib":
            assert target == "__init__" or not target.startswith("_"), (
                f"contrib imports private module {name}"
            )
            continue
        if target == top:
            continue
        allowed = ALLOWED.get(top, set())
        assert typing_only or target in allowed, f"{module} must not import {name}"


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_only_transport_uses_aiohttp_client_and_only_decode_uses_xmltodict(path: Path) -> None:
    """Aiohttp's client appears only in _transport; xmltodict only in _decode."""
    module = _module_name(path)
    top = module.split(".")[0]
    for name, typing_only in _imports(ast.parse(path.read_text(encoding="utf-8")), module):
        if name.split(".")[0] == "xmltodict":
            assert top == "_decode", f"{module} imports xmltodict"
        if name.split(".")[0] == "aiohttp" and not typing_only:
            server_side = name.startswith("aiohttp.web") or name == "aiohttp.web"
            assert (
                module == "_transport"
                or (top in {"testing", "callbacks", "contrib", "cli"} and server_side)
                or (top == "testing")
            ), f"{module} imports aiohttp client code ({name})"


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_never_await_sleep_or_draw(module: str) -> None:
    """The pure core holds no async def and imports no asyncio, aiohttp, time or random."""
    package = PACKAGE / module
    paths = sorted(package.glob("*.py")) if package.is_dir() else [PACKAGE / f"{module}.py"]
    assert paths, module
    for path in paths:
        name_here = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            assert not isinstance(node, ast.AsyncFunctionDef), f"{name_here} defines async"
        for name, typing_only in _imports(tree, name_here):
            if typing_only:
                continue
            assert name.split(".")[0] not in FORBIDDEN_IN_PURE, f"{name_here} imports {name}"


def test_the_checker_sees_a_forbidden_import() -> None:
    """The layering parser reports a private import when one is present (the test can fail)."""
    tree = ast.parse("from freedompay_async._client import FreedomPayClient\nimport aiohttp\n")
    names = {name for name, _ in _imports(tree, "_models")}
    assert "freedompay_async._client" in names
    assert "aiohttp" in names
    assert "_client" not in ALLOWED["_models"]
