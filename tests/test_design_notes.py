"""The reasons live in the repository: every reference to the design notes names a heading of docs/design.md, and
no reference points at a numbered section of a document the repository does not hold."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "docs" / "design.md"

SCANNED = ("clipiqa", "tests", "README.md", "ARCHITECTURE.md")
"""Folders and files whose references must resolve (add "widgets" and "notebooks" here once theirs do)."""

SECTION_REF = re.compile(r"docs/design\.md`?,?\s*\(?[\"']([^\"'\n]+)[\"']")
"""``docs/design.md, 'Evaluation protocol'``, ``docs/design.md ("CPU threads")``, ```docs/design.md`, "CPU threads"``."""
NUMBERED_REF = re.compile(r"\bDESIGN(?:\.md)?(?:,)?(?: section)?\s+\d+(?:\.\d+)?\b")
"""A reference by number to the team's outside spec (``DESIGN`` followed by a section number)."""


def scanned_files():
    for name in SCANNED:
        path = ROOT / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        yield from (f for f in files if f.suffix in (".py", ".md") and "__pycache__" not in f.parts)


def headings() -> set[str]:
    return {line.lstrip("#").strip() for line in NOTES.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")}


def test_the_design_notes_exist_with_their_main_sections():
    for section in ("The model and its adapters", "Scores: one inference path", "Evaluation protocol",
                    "Quality-aware gradient regularization (QGR)", "Data formats", "Decisions and their reasons",
                    "CPU threads"):
        assert section in headings(), section


def test_every_design_reference_names_an_existing_heading():
    known, broken, found = headings(), [], 0
    for path in scanned_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for section in SECTION_REF.findall(line):
                found += 1
                if section not in known:
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {section!r}")
    assert found > 10  # the pattern still finds the references
    assert not broken, "references to docs/design.md headings that do not exist:\n" + "\n".join(broken)


def test_no_reference_points_at_a_numbered_outside_section():
    bare = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in scanned_files()
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if NUMBERED_REF.search(line)]
    assert not bare, ("point these at a heading of docs/design.md (docs/design.md, then the heading in quotes) or "
                      "say the reason where it is used:\n" + "\n".join(bare))


def test_the_patterns_see_what_they_are_meant_to_see():
    assert SECTION_REF.findall("see docs/design.md, 'Evaluation protocol'.") == ["Evaluation protocol"]
    assert SECTION_REF.findall('in docs/design.md ("CPU threads")') == ["CPU threads"]
    assert SECTION_REF.findall('(design notes: `docs/design.md`, "CPU threads")') == ["CPU threads"]
    for text in ("(DESIGN" " 2.7)", "DESIGN.md" " section 2.3", "DESIGN" " 7", "DESIGN" " 2.2, 2.3"):
        assert NUMBERED_REF.search(text), text
    assert not NUMBERED_REF.search("DESIGN_FEATURES = BRISQUE_FEATURES")
