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
        "_hold",
        "_config",
        "_exceptions",
        "_models",
        "_retry",
        "_batch",
        "_classic_models",
        "reporting",
        "_classic",
        "_classic_errors",
    },
    "_call_core": {"_config", "_exceptions", "_retry"},
    "_call": {
        "_call_core",
        "_config",
        "_exceptions",
        "_models",
        "_protocol",
        "_retry",
        "settlement",
    },
    "_guard": {"_exceptions", "_models", "facts"},
    "_events": {"_call", "_retry"},
    "_exceptions": {"_payment", "masking"},  # _payment: type-checking only
    "_payment": {"masking"},
    "_models": {"_exceptions", "_payment", "masking", "facts"},
    "_config": {"_exceptions", "facts"},
    "signing": set(),
    "masking": set(),
    "facts": set(),
    "settlement": {"_models", "_exceptions", "facts"},
    "_protocol": {
        "signing",
        "_config",
        "_models",
        "_exceptions",
        "_validate",
        "masking",
        "_classic_models",
    },
    "_validate": {"_models", "_exceptions", "facts"},
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
        "facts",
    },
    "_classic_settle": {"_classic_models", "_exceptions", "settlement"},
    "_retry": {"_config", "_models", "_exceptions", "_breaker"},
    "_breaker": set(),
    "_classic_errors": {"_exceptions"},
    "_classic_call": {
        "_call_core",
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
        "_driver",
        "_events",
        "_exceptions",
        "_guard",
        "_protocol",
        "_retry",
        "_transport",
    },
    "_classic_client": {"_classic_driver", "_classic_models", "_config"},
    "_transport": {
        "_protocol",
        "_config",
        "_exceptions",
        "_inflate",
        "masking",
        "_gate",
    },
    "_gate": set(),
    "_batch": {"_models", "_exceptions", "_summary", "_hold", "facts"},
    "_summary": {"_models", "_exceptions", "facts"},
    "_hold": {"_models", "_exceptions", "_retry"},
    "_client": {
        "_classic",
        "_classic_client",
        "_classic_driver",
        "_config",
        "_driver",
        "_exceptions",
        "_guard",
        "_invoice_client",
        "_retry",
        "_transport",
        "facts",
    },
    "_driver": {
        "_call",
        "_call_core",
        "_config",
        "_decode",
        "_events",
        "_exceptions",
        "_guard",
        "_models",
        "_protocol",
        "_retry",
        "_transport",
    },
    "_invoice_client": {
        "_batch",
        "_hold",
        "_call",
        "_config",
        "_decode",
        "_driver",
        "_exceptions",
        "_models",
        "_protocol",
        "facts",
    },
    "callbacks": {"signing", "_decode", "_exceptions", "masking"},
    "csvinput": {"__init__", "masking"},
    "records": {"__init__", "masking", "facts"},
    "reporting": {"_batch"},
    "cli": {
        "__init__",
        "testing",
        "contrib",
        "csvinput",
        "records",
        "masking",
        "settlement",
        "reporting",
        "facts",
        "_classic_models",
        "_classic_settle",
    },
    "__main__": {"cli"},
}
# The async shell: the private modules that await. Every other private module is pure, checked
# automatically: a new core module needs no entry anywhere to be held to the pure rules.
SHELL = {
    "_client",
    "_driver",
    "_invoice_client",
    "_transport",
    "_batch",
    "_gate",
    "_guard",
    "_hold",
    "_classic_driver",
    "_classic_client",
}
# Public modules at the edge: servers, workers, the command line, wall-clock records.
PERIPHERY = {"callbacks", "testing", "contrib", "cli", "records", "__main__"}
FORBIDDEN_IN_PURE = {"asyncio", "aiohttp", "time", "random"}
# A pure module may name these under TYPE_CHECKING only (`random.Random` for an injected rng).
TYPING_ONLY_IN_PURE = {"random"}
# The only part of importlib the package may use (`__version__`).
IMPORTLIB_ALLOWED = {"importlib.metadata"}
# Calls that import by name at run time, hiding the edge from this test.
DYNAMIC_IMPORT_CALLS = {"__import__", "import_module"}
# Import cycles still present, each with why: the list may only shrink.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts)


def _is_module(dotted: str) -> bool:
    """Whether *dotted* (`freedompay_async.x.y`) names a module or package of this package."""
    rel = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    return (PACKAGE / rel.with_suffix(".py")).exists() or (PACKAGE / rel / "__init__.py").exists()


def _imports(tree: ast.Module, module: str) -> list[tuple[str, bool]]:
    """Return (imported module, under TYPE_CHECKING) pairs, absolute names."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for item in child.body:
                    visit_node(item, typing_only=True)
                for item in child.orelse:
                    visit_node(item, typing_only=typing_only)
                continue
            visit_node(child, typing_only)

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
            for alias in child.names:
                sub = f"{name}.{alias.name}"
                if name.startswith("freedompay_async") and _is_module(sub):
                    found.append((sub, typing_only))
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


def _layer_violations(module: str, tree: ast.Module) -> list[str]:
    """Every import of *module* that its layer does not allow, TYPE_CHECKING imports included."""
    top = module.split(".", maxsplit=1)[0]
    problems: list[str] = []
    for name, typing_only in _imports(tree, module):
        target = _internal(name)
        if target is None or target == top:
            continue
        where = " (under TYPE_CHECKING)" if typing_only else ""
        if top == "testing":
            if target not in {"signing", "__init__"}:
                problems.append(f"testing imports private module {name}{where}")
        elif top == "contrib":
            if target != "__init__" and target.startswith("_"):
                problems.append(f"contrib imports private module {name}{where}")
        elif target not in ALLOWED.get(top, set()):
            problems.append(f"{module} must not import {name}{where}")
    return problems


def _dynamic_imports(tree: ast.Module) -> list[str]:
    """Imports by name at run time (importlib, `__import__`, `sys.modules`): edges unseen by ast."""
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            problems.extend(
                f"imports {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] == "importlib" and alias.name not in IMPORTLIB_ALLOWED
            )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("importlib"):
            for alias in node.names:
                full = node.module if node.module != "importlib" else f"importlib.{alias.name}"
                if full not in IMPORTLIB_ALLOWED:
                    problems.append(f"imports {alias.name} from {node.module}")
        elif isinstance(node, ast.Name) and node.id in DYNAMIC_IMPORT_CALLS:
            problems.append(f"uses {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in DYNAMIC_IMPORT_CALLS:
            problems.append(f"uses .{node.attr}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "modules"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            problems.append("reads sys.modules")
    return problems


def _is_pure(module: str) -> bool:
    """Whether *module* is held to the pure rules: everything but the shell and the periphery."""
    top = module.split(".", maxsplit=1)[0]
    return top not in SHELL and top not in PERIPHERY


def _purity_violations(module: str, tree: ast.Module) -> list[str]:
    """Awaiting code, or an import of asyncio, aiohttp, time or random, in a pure module."""
    problems = [
        f"{module} awaits ({type(node).__name__} on line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef | ast.Await | ast.AsyncFor | ast.AsyncWith)
    ]
    for name, typing_only in _imports(tree, module):
        root = name.split(".")[0]
        if root not in FORBIDDEN_IN_PURE:
            continue
        if typing_only and root in TYPING_ONLY_IN_PURE:
            continue
        where = " (under TYPE_CHECKING)" if typing_only else ""
        problems.append(f"{module} imports {name}{where}")
    return problems


def _dotted(path: Path) -> str:
    """The importable name of a package file: `freedompay_async._decode._invoice`."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["freedompay_async", *parts])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle the graph holds (one path per back edge), by depth-first search."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, TYPE_CHECKING imports included."""
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        here = _dotted(path)
        edges = graph.setdefault(here, set())
        for name, _ in _imports(ast.parse(path.read_text(encoding="utf-8")), _module_name(path)):
            if not name.startswith("freedompay_async"):
                continue
            target = name
            while target != "freedompay_async" and not _is_module(target):
                target = target.rsplit(".", 1)[0]
            if target != here:
                edges.add(target)
    return graph


MODULES = sorted(PACKAGE.rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_imports_follow_the_layer_table(path: Path) -> None:
    """Every package module imports only the internal modules its layer allows, at any time."""
    assert _layer_violations(_module_name(path), _tree(path)) == []


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_only_transport_uses_aiohttp_client_and_only_decode_uses_xmltodict(path: Path) -> None:
    """Aiohttp's client appears only in _transport; xmltodict only in _decode."""
    module = _module_name(path)
    top = module.split(".")[0]
    for name, typing_only in _imports(_tree(path), module):
        if name.split(".")[0] == "xmltodict":
            assert top == "_decode", f"{module} imports xmltodict"
        if name.split(".")[0] == "aiohttp" and not typing_only:
            server_side = name.startswith("aiohttp.web") or name == "aiohttp.web"
            assert (
                module == "_transport"
                or (top in {"testing", "callbacks", "contrib", "cli"} and server_side)
                or (top == "testing")
            ), f"{module} imports aiohttp client code ({name})"


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_no_module_imports_by_name_at_run_time(path: Path) -> None:
    """No module hides an import from this test with importlib, `__import__` or `sys.modules`."""
    assert _dynamic_imports(_tree(path)) == [], _module_name(path)


PURE_MODULES = [path for path in MODULES if _is_pure(_module_name(path))]


@pytest.mark.parametrize("path", PURE_MODULES, ids=_module_name)
def test_pure_modules_never_await_sleep_or_draw(path: Path) -> None:
    """Every module outside the shell and the periphery holds no await and no clock or rng."""
    assert _purity_violations(_module_name(path), _tree(path)) == []


def test_the_pure_set_is_derived_not_listed() -> None:
    """The core modules are pure by default: the shell list names only modules that await."""
    pure = {_module_name(path).split(".")[0] for path in PURE_MODULES}
    assert {"_call", "_retry", "_decode", "_protocol", "_models", "_exceptions"} <= pure
    assert {"signing", "settlement", "masking"} <= pure
    for module in SHELL:
        single = PACKAGE / f"{module}.py"
        paths = [single] if single.exists() else sorted((PACKAGE / module).glob("*.py"))
        assert paths, f"the shell lists {module}, which does not exist"
        assert any(
            isinstance(node, ast.AsyncFunctionDef)
            for path in paths
            for node in ast.walk(_tree(path))
        ), f"{module} awaits nothing: it belongs to the pure core, not the shell"


def test_the_package_has_no_import_cycle() -> None:
    """No chain of imports, TYPE_CHECKING imports included, leads a module back to itself."""
    cycles = {frozenset(cycle): cycle for cycle in _cycles(_import_graph())}
    new = [" -> ".join(cycle) for members, cycle in cycles.items() if members not in KNOWN_CYCLES]
    assert new == [], "import cycles"
    gone = [sorted(members) for members in KNOWN_CYCLES if members not in cycles]
    assert gone == [], "these cycles are gone: remove them from KNOWN_CYCLES"


def test_the_checker_sees_a_forbidden_import() -> None:
    """The layering parser reports a private import when one is present (the test can fail)."""
    tree = ast.parse("from freedompay_async._client import FreedomPayClient\nimport aiohttp\n")
    names = {name for name, _ in _imports(tree, "_models")}
    assert "freedompay_async._client" in names
    assert "aiohttp" in names
    assert "_client" not in ALLOWED["_models"]


def test_the_checker_refuses_a_type_checking_import() -> None:
    """An import the table forbids is refused under TYPE_CHECKING as well."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from freedompay_async._client import FreedomPayClient\n"
    )
    assert _layer_violations("_models", ast.parse(source)) == [
        "_models must not import freedompay_async._client (under TYPE_CHECKING)"
    ]


@pytest.mark.parametrize(
    "source",
    [
        "import importlib\nimportlib.import_module('freedompay_async._client')\n",
        "from importlib import import_module\n",
        "mod = __import__('freedompay_async._client')\n",
        "import builtins\nbuiltins.__import__('x')\n",
        "import sys\nclient = sys.modules['freedompay_async._client']\n",
        "import importlib.util\n",
    ],
)
def test_the_checker_refuses_a_dynamic_import(source: str) -> None:
    """Importing by name at run time is refused, whichever spelling hides it."""
    assert _dynamic_imports(ast.parse(source)) != []


def test_the_checker_lets_version_metadata_through() -> None:
    """`importlib.metadata` (for `__version__`) is the one importlib use allowed."""
    assert _dynamic_imports(ast.parse("from importlib import metadata\n")) == []


def test_a_new_private_module_is_held_pure_without_being_listed() -> None:
    """A private module nobody listed anywhere is checked as pure, and an await in it is caught."""
    assert _is_pure("_brand_new")
    assert _is_pure("_decode._brand_new")
    source = "import time\nasync def f() -> None:\n    pass\n"
    problems = _purity_violations("_brand_new", ast.parse(source))
    assert any("awaits" in problem for problem in problems)
    assert "_brand_new imports time" in problems


def test_a_pure_module_may_not_hide_asyncio_under_type_checking() -> None:
    """Only `random` may appear under TYPE_CHECKING in a pure module; asyncio may not."""
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio\n"
    assert _purity_violations("_retry", ast.parse(source)) == [
        "_retry imports asyncio (under TYPE_CHECKING)"
    ]
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from random import Random\n"
    assert _purity_violations("_retry", ast.parse(source)) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    """A two-module cycle and a longer one are both reported."""
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
