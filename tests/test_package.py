"""The package's shape: one home per concern, checked so it stays that way."""

import ast
import json
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "cotlab"


def cotlab_imports(path) -> set[str]:
    """Every cotlab module a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cotlab"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if (PACKAGE / f"{a.name}.py").is_file())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cotlab"))
    return {name for name in found if name != "cotlab"}


def test_no_import_circle_inside_cotlab_counting_imports_in_functions():
    graph = {f"cotlab.{p.stem}": cotlab_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    state: dict[str, str] = {}

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            assert state.get(target) != "open", "import circle: " + " -> ".join([*trail, module, target])
            if target not in state:
                visit(target, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_argument_parsing_lives_only_in_the_cli():
    users = sorted(p.name for p in PACKAGE.glob("*.py") if "argparse" in p.read_text() and p.name != "cli.py")
    assert users == []


def test_notebooks_define_no_long_helpers():
    """Notebooks tell the story; any function or class longer than 5 lines belongs in the package."""
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            for node in ast.walk(ast.parse("".join(cell["source"]))):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    length = node.end_lineno - node.lineno + 1
                    assert length <= 5, f"{notebook.name}: {node.name} is {length} lines long"


def test_help_and_version_answer_without_importing_torch():
    code = ("import sys; from cotlab.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "eval" in result.stdout and "train" in result.stdout
    version = subprocess.run([sys.executable, "-m", "cotlab.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("cotlab ")


def test_the_launcher_module_is_the_cli():
    """`python -m cotlab.train` (what accelerate and torchrun run) parses and fails like `cotlab train`."""
    launched = subprocess.run([sys.executable, "-m", "cotlab.train", "sft", "--set", "lora_rank=4"], capture_output=True,
                              text=True, timeout=300, cwd=REPO)
    assert launched.returncode == 2
    assert launched.stderr.strip().splitlines()[-1] == "cotlab: error: unknown sft recipe field 'lora_rank'; did you mean 'lora_r'?"
