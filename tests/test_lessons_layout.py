"""Where a lesson's code lives: one module per lesson in cotlab/lessons/, the pipeline beside it,
and notebooks that import a small front door (`cotlab.lesson`) and their own lesson module."""

import ast
import json
import re

import pytest

from conftest import REPO

LESSONS = sorted(p for p in (REPO / "cotlab" / "lessons").glob("*.py") if p.name != "__init__.py")
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def imported_modules(tree) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def notebook_code(path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_no_lesson_module_imports_another_lessons(path):
    others = {f"cotlab.lessons.{p.stem}" for p in LESSONS if p != path} | {"cotlab.lesson"}
    imported = imported_modules(ast.parse(path.read_text()))
    # cotlab.lesson (the front door) is the notebooks' door; a lesson may reach the pipeline's sft_start through it
    assert not (imported & others - {"cotlab.lesson"}), f"{path.name} imports {imported & others}"


def test_each_notebook_imports_the_front_door_and_at_most_its_own_lesson():
    owners = {}
    for nb in NOTEBOOKS:
        cotlab = {m for m in imported_modules(ast.parse(notebook_code(nb))) if m.startswith("cotlab")}
        own = cotlab - {"cotlab.lesson"}
        assert "cotlab.lesson" in cotlab and len(own) <= 1, f"{nb.name} imports {sorted(cotlab)}"
        assert all(m.startswith("cotlab.lessons.") for m in own), f"{nb.name} imports {own}"
        for module in own:
            assert module not in owners, f"{nb.name} and {owners[module]} share {module}"
            owners[module] = nb.name
    assert set(owners) == {f"cotlab.lessons.{p.stem}" for p in LESSONS}  # every lesson module serves its notebook


def test_no_helper_is_defined_in_more_than_one_notebook():
    defined = {}
    for nb in NOTEBOOKS:
        for name in re.findall(r"^\s*def (\w+)\(", notebook_code(nb), re.M):
            assert name not in defined, f"{name} is defined in {defined[name]} and {nb.name}"
            defined[name] = nb.name


def test_the_front_door_exports_what_it_names():
    import cotlab.lesson as lesson

    assert all(hasattr(lesson, name) for name in lesson.__all__)
