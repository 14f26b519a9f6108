"""Every relative link in the README, the CHANGELOG, docs/ and bench/*.md resolves to a path in
the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *ROOT.joinpath("docs").rglob("*.md"),
        *ROOT.joinpath("bench").glob("*.md"),
    ]
)

# [text](target) and [text](target "title"), images included; reference definitions `[x]: target`.
INLINE = re.compile(r"\]\(\s*(<[^>\n]*>|[^)\s]+)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>\n]*>|\S+)", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def links(text: str) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return [t.strip("<>") for t in INLINE.findall(text) + REFERENCE.findall(text)]


def is_relative(target: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith(("#", "//"))


def test_the_link_finder_sees_every_kind_of_link() -> None:
    text = (
        '[a](docs/a.md) ![b](img/b.png) [c](c.md#part) [d](<d e.md>) [e](e.md "title")\n'
        "[f]: f.md\n`[g](not/a/link.md)`\n```\n[h](not/a/link.md)\n```\n[i](https://x.org)\n"
    )
    found = [t for t in links(text) if is_relative(t)]
    assert found == ["docs/a.md", "img/b.png", "c.md#part", "d e.md", "e.md", "f.md"]


def test_there_are_documents_to_check() -> None:
    names = {d.relative_to(ROOT).as_posix() for d in DOCUMENTS}
    assert {"README.md", "docs/architecture.md", "bench/README.md", "bench/RESULTS.md"} <= names
    assert {"CHANGELOG.md", "docs/quickstart.md", "docs/versioning.md", "docs/purposes.md"} <= names


def test_the_readme_links_the_integrator_documents() -> None:
    targets = set(links((ROOT / "README.md").read_text(encoding="utf-8")))
    wanted = {"docs/quickstart.md", "docs/purposes.md", "docs/versioning.md", "CHANGELOG.md"}
    assert wanted <= targets


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_relative_links_resolve_inside_the_repository(document: Path) -> None:
    broken = []
    for target in links(document.read_text(encoding="utf-8")):
        if not is_relative(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not path:
            continue
        resolved = (document.parent / path).resolve()
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (no such file)")
    assert broken == [], f"{document.relative_to(ROOT)}: {broken}"


def test_nothing_in_the_repository_reads_or_links_a_folder_outside_it() -> None:
    """The domain notes the project was started from are not part of it: no document, code or
    configuration may link or read `../shared/` (docs/ holds our own account)."""
    outside = re.compile(r"\.\./shared\b|/work/shared\b")
    found = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if not path.is_file() or parts[0].startswith(".") or path.suffix not in TEXT:
            continue
        if path == Path(__file__).resolve():
            continue
        if any(p in ("node_modules", "__pycache__", "static") for p in parts):
            continue
        if outside.search(path.read_text(encoding="utf-8", errors="replace")):
            found.append(path.relative_to(ROOT).as_posix())
    assert found == []


TEXT = {".md", ".py", ".toml", ".json", ".graphql", ".sh", ".yml", ".yaml", ".cfg", ".ini", ""}
