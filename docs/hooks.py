"""
Build checks and README includes for the documentation site (an mkdocs hook).

- A page line `<!-- readme: ## Heading -->` is replaced by that README section's body (with its
  subsections; `readme-intro:` stops at the first subsection), so the site and the README say the
  same thing without copies that drift apart. README links to a section that another page
  includes are pointed at that page.
- Every public name (`__all__`) of the documented modules needs a docstring, and so does every
  public method or property of a public class; each must also appear in the rendered API
  reference. A miss is logged as a warning, which `mkdocs build --strict` turns into a failure.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import griffe

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.freedompay_async")

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: The modules whose public names the API reference must document.
DOCUMENTED = (
    "freedompay_async",
    "freedompay_async.signing",
    "freedompay_async.masking",
    "freedompay_async.settlement",
    "freedompay_async.callbacks",
    "freedompay_async.testing",
    "freedompay_async.testing.pytest_plugin",
    "freedompay_async.contrib",
    "freedompay_async.contrib.redis_guard",
    "freedompay_async.contrib.arq",
    "freedompay_async.contrib.otel",
)

_INCLUDE = re.compile(r"^<!-- (readme|readme-intro): (#+ .+?) -->$", re.MULTILINE)
_ANCHOR_LINK = re.compile(r"\]\(#([a-z0-9-]+)\)")

#: README heading slug -> the page that includes that section ("page.md" or "page.md#slug").
_LINKS: dict[str, str] = {}


def _slug(heading: str) -> str:
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", text))


def readme_section(heading: str, *, subsections: bool = True) -> str | None:
    """
    Return the body of one README section, up to the next heading of the same or a higher level.

    Args:
        heading: The heading line exactly, e.g. `## Assumptions`.
        subsections: Whether to keep the section's subsections.

    Returns:
        The body, or None when README has no such heading.
    """
    lines = README.read_text(encoding="utf-8").splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    try:
        start = lines.index(heading) + 1
    except ValueError:
        return None
    body: list[str] = []
    fenced = False
    for line in lines[start:]:
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(rf"^#{{1,{level if subsections else 6}}} ", line):
            break
        body.append(line)
    return "\n".join(body).strip() + "\n"


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Map every README heading that a page includes to that page."""
    _LINKS.clear()
    for source in sorted(Path(config.docs_dir).glob("*.md")):
        for kind, heading in _INCLUDE.findall(source.read_text(encoding="utf-8")):
            _LINKS[_slug(heading)] = source.name
            body = readme_section(heading, subsections=kind == "readme") or ""
            fenced = False
            for line in body.splitlines():
                fenced = fenced != line.startswith("```")
                if not fenced and line.startswith("#"):
                    _LINKS[_slug(line)] = f"{source.name}#{_slug(line)}"
    return config


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace each README include marker of a page with the section's body."""
    del config, files

    def relink(match: re.Match[str]) -> str:
        target = _LINKS.get(match.group(1))
        if target is None or target.split("#")[0] == page.file.src_uri:
            return match.group(0)
        return f"]({target})"

    def include(match: re.Match[str]) -> str:
        body = readme_section(match.group(2), subsections=match.group(1) == "readme")
        if body is None:
            log.warning(
                "%s includes README section %r, which README lacks",
                page.file.src_uri,
                match.group(2),
            )
            return ""
        return _ANCHOR_LINK.sub(relink, body)

    return _INCLUDE.sub(include, markdown)


def _public_names() -> list[tuple[str, griffe.Object | griffe.Alias]]:
    package = griffe.load("freedompay_async", search_paths=[str(ROOT)], resolve_aliases=True)
    found: list[tuple[str, griffe.Object | griffe.Alias]] = []
    for path in DOCUMENTED:
        module = package if path == "freedompay_async" else package[path.split(".", 1)[1]]
        exports = module.exports
        if exports is None:
            log.warning("%s has no __all__: its public names are undefined", path)
            continue
        found.extend((f"{path}.{name}", module[str(name)]) for name in exports)
    return found


def _undocumented(path: str, obj: griffe.Object | griffe.Alias) -> list[str]:
    missing: list[str] = []
    target: Any = obj.final_target if obj.is_alias else obj
    documentable = target.kind in {griffe.Kind.CLASS, griffe.Kind.FUNCTION, griffe.Kind.MODULE}
    if documentable and (not target.docstring or not target.docstring.value.strip()):
        missing.append(path)
    if target.kind is griffe.Kind.CLASS:
        for name, member in target.members.items():
            if name.startswith("_") or member.is_alias:
                continue
            is_property = "property" in member.labels
            if (member.kind is griffe.Kind.FUNCTION or is_property) and not member.docstring:
                missing.append(f"{path}.{name}")
    return missing


def on_post_build(*, config: MkDocsConfig) -> None:
    """Warn about every public name without a docstring or missing from the API reference."""
    rendered = "".join(
        page.read_text(encoding="utf-8")
        for page in (Path(config.site_dir) / "reference").rglob("*.html")
    )
    for path, obj in _public_names():
        for name in _undocumented(path, obj):
            log.warning("public name %s has no docstring", name)
        if f'id="{path}"' not in rendered:
            log.warning("public name %s is missing from the API reference", path)
