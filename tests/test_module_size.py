"""Modules stay readable in one sitting: 400 lines at most; the listed exceptions only shrink."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "freedompay_async"
LIMIT = 400

# Module (path inside the package) -> (lines it may hold at most, why it is still over the limit).
# The goal is an empty table: a module leaves it once it is split to 400 lines or fewer.
OVER_LIMIT: dict[str, tuple[int, str]] = {}


def _lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for _ in handle)


def _sizes() -> dict[str, int]:
    return {
        path.relative_to(PACKAGE).as_posix(): _lines(path) for path in sorted(PACKAGE.rglob("*.py"))
    }


def _problems(sizes: dict[str, int], allowed: dict[str, tuple[int, str]]) -> list[str]:
    """Every module over the limit without an entry, grown past its entry, or listed needlessly."""
    problems: list[str] = []
    for module, lines in sizes.items():
        ceiling, _ = allowed.get(module, (LIMIT, ""))
        if lines > ceiling:
            problems.append(f"{module} has {lines} lines, more than {ceiling}: split it")
    for module, (ceiling, reason) in allowed.items():
        if not reason:
            problems.append(f"{module} is listed without a reason")
        if module not in sizes:
            problems.append(f"{module} is listed but does not exist: remove its entry")
        elif sizes[module] <= LIMIT:
            problems.append(f"{module} is within {LIMIT} lines now: remove its entry")
        elif ceiling <= LIMIT:
            problems.append(f"{module} is listed at {ceiling}, within the limit: remove its entry")
    return problems


def test_no_module_grows_past_its_recorded_size() -> None:
    """Every module holds at most 400 lines, or at most the size its entry records."""
    assert _problems(_sizes(), OVER_LIMIT) == []


def test_every_module_is_measured() -> None:
    """The measure sees the package's modules, packages' modules included."""
    sizes = _sizes()
    assert "_retry.py" in sizes
    assert "signing/__init__.py" in sizes
    assert "_decode/_invoice.py" in sizes
    assert all(lines > 0 for lines in sizes.values())


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ({"_new.py": LIMIT + 1}, "_new.py has 401 lines, more than 400: split it"),
        ({"_client.py": 734}, "_client.py has 734 lines, more than 733: split it"),
        ({"_client.py": 350}, "_client.py is within 400 lines now: remove its entry"),
        ({}, "_client.py is listed but does not exist: remove its entry"),
    ],
)
def test_the_size_check_can_fail(sizes: dict[str, int], expected: str) -> None:
    """A new big module, a grown one and a stale entry are each reported."""
    allowed = {"_client.py": (733, "reason")}
    assert expected in _problems(sizes, allowed)


def test_a_module_within_its_entry_passes() -> None:
    """A listed module at or under its recorded size, and a small module, are not reported."""
    allowed = {"_client.py": (733, "reason")}
    assert _problems({"_client.py": 733, "_small.py": LIMIT}, allowed) == []
