"""The linter's settings (pyproject.toml: pyflakes, pycodestyle errors, import order, 120 columns)
hold for every Python file of the repository, and so do two rules of the house: no product function
over 80 lines, none over 7 parameters without the reason next to its signature."""

import ast
import os
import subprocess
import sys

from tests import helpers


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format=concise", "."],
                            cwd=helpers.ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def _product_functions():
    """(file, function node, source lines) of every function in the product's top-level .py files."""
    for name in sorted(os.listdir(helpers.ROOT)):
        if name.endswith(".py"):
            with open(os.path.join(helpers.ROOT, name)) as f:
                source = f.read()
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield name, node, source.splitlines()


def test_no_product_function_is_longer_than_80_lines():
    long = [f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for name, node, _ in _product_functions() if node.end_lineno - node.lineno + 1 > 80]
    assert not long, long


def test_a_function_of_more_than_7_parameters_says_why_next_to_its_signature():
    # The reason is a comment `# N parameters: ...` between the signature and the body.
    unexplained = []
    for name, node, lines in _product_functions():
        args = node.args
        count = len(args.posonlyargs + args.args + args.kwonlyargs) + bool(args.vararg) + bool(args.kwarg)
        count -= bool(args.args) and args.args[0].arg in ("self", "cls")
        between = lines[node.lineno - 1:node.body[0].lineno - 1]
        if count > 7 and not any(line.strip().startswith(f"# {count} parameters: ") for line in between):
            unexplained.append(f"{name}:{node.lineno} {node.name} ({count} parameters)")
    assert not unexplained, unexplained
