"""The docs are a map that must not rot: every link in README.md, docs/*.md and perf/*.md leads
to a file of this repository (and, for a heading anchor into a page, to that heading), nothing
points outside the repository (a user's clone has no design notes or shared data beside it),
README.md stays short, and every docs/ page is reachable from README.md."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "perf").glob("*.md"))
    return [f for f in files if f.is_file()]


def _prose(text: str) -> str:
    """The text a reader sees as prose: fenced code blocks and code spans removed."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Every link target of a markdown text (inline, reference definitions, autolinks)."""
    prose = _prose(text)
    found = [m.group(1) for m in _INLINE_LINK.finditer(prose)]
    found += [m.group(1) for m in _REF_DEF.finditer(prose)]
    found += [m.group(1) for m in _AUTOLINK.finditer(prose)]
    return found


def slug(heading: str) -> str:
    """The anchor a heading gets on the usual markdown renderers (GitHub's rule)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    kept = []
    for ch in text:
        if ch in " -_" or unicodedata.category(ch)[0] in "LN":
            kept.append("-" if ch == " " else ch)
    return "".join(kept)


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in _HEADING.finditer(_FENCE.sub("", text)):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problem(source: Path, target: str) -> str | None:
    """Why ``target``, linked from ``source``, is not a good in-repository link (None: it is)."""
    if not target:
        return "empty link"
    if _SCHEME.match(target) or target.startswith("//"):
        return "leaves the repository (a URL)"
    path_part, _, anchor = target.partition("#")
    dest = (source.parent / path_part).resolve() if path_part else source
    if not dest.is_relative_to(ROOT):
        return "leaves the repository"
    if not dest.exists():
        return "no such file"
    if not anchor or dest.suffix != ".md" or not dest.is_file():
        return None
    if anchor.lower() not in anchors(dest.read_text(encoding="utf-8")):
        return f"no heading #{anchor} in {dest.relative_to(ROOT)}"
    return None


def test_the_doc_files_exist() -> None:
    names = {f.relative_to(ROOT).as_posix() for f in doc_files()}
    assert "README.md" in names
    assert "perf/README.md" in names
    assert any(n.startswith("docs/") for n in names)


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    bad = [(t, why) for t in links(text) if (why := link_problem(doc, t))]
    assert not bad, f"{doc.relative_to(ROOT)}: {bad}"


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_web_address_anywhere(doc: Path) -> None:
    """Not even as bare text or inside code: a page that needs the web to be understood is not
    a page of this repository."""
    text = doc.read_text(encoding="utf-8")
    found = re.findall(r"https?://\S+", text)
    assert not found, f"{doc.relative_to(ROOT)}: {found}"
    for outside in ("DESIGN.md", "../shared", "STYLE.md"):
        assert outside not in text, f"{doc.relative_to(ROOT)} mentions {outside}"


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = ROOT / "README.md"
    linked = set()
    for target in links(readme.read_text(encoding="utf-8")):
        path_part = target.partition("#")[0]
        if path_part and not _SCHEME.match(path_part):
            linked.add((readme.parent / path_part).resolve())
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "no docs/ pages"
    missing = [p.name for p in pages if p.resolve() not in linked]
    assert not missing, f"docs pages README.md does not link to: {missing}"


def test_every_perf_suite_has_its_section_and_command() -> None:
    """perf/README.md has, per suite, a section named after it and the command that runs it."""
    text = (ROOT / "perf" / "README.md").read_text(encoding="utf-8")
    headings = {m.group(2).strip() for m in _HEADING.finditer(_FENCE.sub("", text))}
    code = "\n".join(m.group(0) for m in _FENCE.finditer(text))
    for suite in sorted((ROOT / "perf").glob("bench_*.py")):
        assert suite.stem in headings, f"perf/README.md: no section '## {suite.stem}'"
        assert f"perf/{suite.name}" in code, f"perf/README.md: no command running {suite.name}"


# the checker itself: each rule must catch what it is for


def test_checker_finds_links_but_not_code(tmp_path: Path) -> None:
    text = (
        "see [a](docs/a.md#x) and ![img](pic.png) and <https://example.org>\n"
        "[ref]: perf/README.md\n"
        "`[not](a-link.md)`\n```\n[nor](this.md)\n```\n"
    )
    assert links(text) == ["docs/a.md#x", "pic.png", "perf/README.md", "https://example.org"]


def test_checker_refuses_what_it_must(tmp_path: Path) -> None:
    src = ROOT / "docs" / "x.md"
    assert link_problem(src, "https://example.org") is not None
    assert link_problem(src, "mailto:someone") is not None
    assert link_problem(src, "../../outside.md") == "leaves the repository"
    assert link_problem(src, "../no_such_file.py") == "no such file"
    assert link_problem(src, "../README.md#no-such-heading-anywhere") is not None
    assert link_problem(src, "../README.md") is None
    assert link_problem(src, "../engine/") is None


def test_slug_follows_the_renderers() -> None:
    assert slug("Secrets: passwords out of `config.toml`") == "secrets-passwords-out-of-configtoml"
    assert slug("bench_risk") == "bench_risk"
    assert slug("Live, paper, simulated") == "live-paper-simulated"
    assert anchors("# A\n## A\n```\n# B\n```\n") == {"a", "a-1"}
