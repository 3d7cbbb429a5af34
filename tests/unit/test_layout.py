"""The README's layout tree is the package's tree, and each domain folder says what it owns."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pytest_promptopt"
ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.]+/?)\s")


def readme_tree() -> set[str]:
    """Paths under pytest_promptopt/ that the README's layout tree lists, e.g. 'llm/cache.py'."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Layout"):]
    block = next(b for b in section.split("```")[1::2] if b.lstrip("\n").startswith("pytest_promptopt/"))
    listed: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.strip("\n").splitlines()[1:]:
        match = ENTRY.match(line + " ")
        if not match or not line.startswith("  "):
            if line and not line.startswith(" "):
                break  # tests/, examples/: outside the package
            continue
        indent, name = len(match["indent"]), match["name"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([*(s for _, s in stack), name.rstrip("/")])
        listed.add(path)
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
    return listed


def package_tree() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if "__pycache__" in rel.parts or (rel.name == "__init__.py" and rel.parent != Path(".")):
            continue
        found.add(rel.as_posix())
        found.update(parent.as_posix() for parent in rel.parents if parent != Path("."))
    return found


def test_the_readme_layout_lists_exactly_the_package_modules_and_folders() -> None:
    listed, actual = readme_tree(), package_tree()
    assert sorted(actual - listed) == [], "in the package, missing from the README's layout tree"
    assert sorted(listed - actual) == [], "in the README's layout tree, not in the package"


def test_every_domain_folder_says_what_it_owns_and_what_it_may_import() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.relative_to(ROOT)} has no docstring"
        assert "import" in doc, f"{init.relative_to(ROOT)}'s docstring does not say what it may import"


def test_at_most_ten_modules_remain_at_the_top_level() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top
