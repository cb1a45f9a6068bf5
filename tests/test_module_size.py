"""No module over 450 lines without a reason: a long module says why in its docstring, on a line that starts with
"Long because" (one job that does not split well, e.g. one class around one SQL schema); everything else is
split into modules with one job each."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (ROOT / "clipiqa", ROOT / "widgets")
LIMIT = 450
MARK = "Long because"


def unexplained_long_modules(folders=FOLDERS, limit: int = LIMIT) -> list[str]:
    """``path (n lines)`` for each module over ``limit`` lines whose docstring has no line starting with MARK."""
    out = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            n = len(text.splitlines())
            doc = ast.get_docstring(ast.parse(text)) or ""
            if n > limit and not any(line.strip().startswith(MARK) for line in doc.splitlines()):
                out.append(f"{path.relative_to(Path(folder).parent)} ({n} lines)")
    return out


def test_the_check_finds_a_long_module_without_a_reason(tmp_path):
    (tmp_path / "short.py").write_text('"""Short."""\nx = 1\n')
    (tmp_path / "long.py").write_text('"""Does many things."""\n' + "x = 1\n" * 20)
    (tmp_path / "why.py").write_text('"""Does one thing.\n\nLong because it is one table.\n"""\n' + "x = 1\n" * 20)
    assert unexplained_long_modules([tmp_path], limit=10) == [f"{tmp_path.name}/long.py (21 lines)"]


def test_every_long_module_says_why():
    found = unexplained_long_modules()
    assert not found, (f"modules over {LIMIT} lines without a docstring line starting {MARK!r}; split them into "
                       "modules with one job each, or say why they are one: " + ", ".join(found))
