"""The code stays readable: short functions, no block copied between the trackers or between the engines,
typed (mypy) and linted (ruff), as pyproject.toml configures them."""
from __future__ import annotations

import ast
import io
import keyword
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "reference_trainer"
PACKAGES = [REPO / "trackkit", PACKAGE, *sorted((REPO / "plugins").glob("*/trackkit_*"))]
TRACKERS = [*sorted((REPO / "trackkit" / "trackers").glob("[a-z]*.py")),
            *sorted((REPO / "plugins").glob("*/trackkit_*/__init__.py"))]
LONGEST = 60  # lines per function, decorators and docstring included
SAME_SHAPED_RUN = 6  # consecutive lines


def functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(f"{path.name}:{node.lineno} {node.name}", node.end_lineno - min(
        [node.lineno, *(d.lineno for d in node.decorator_list)]) + 1)
        for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_is_longer_than_60_lines():
    found = [f for package in PACKAGES for path in sorted(package.rglob("*.py")) for f in functions(path)]
    assert len(found) > 300  # the walk found the code
    assert [f"{name}: {lines} lines" for name, lines in found if lines > LONGEST] == []


def shapes(path: Path) -> list[tuple[int, str]]:
    """Each line that holds code, as its shape: names, numbers and strings replaced, keywords and operators kept.

    Imports are left out: two modules importing the same names are not a copied block.
    """
    by_line: dict[int, list[str]] = {}
    for token in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if token.type == tokenize.NAME:
            text = token.string if keyword.iskeyword(token.string) else "n"
        elif token.type in (tokenize.NUMBER, tokenize.STRING):
            text = "v"
        elif token.type == tokenize.OP:
            text = token.string
        else:
            continue
        by_line.setdefault(token.start[0], []).append(text)
    return [(n, " ".join(t)) for n, t in sorted(by_line.items()) if t[0] not in ("import", "from")]


def runs_in_both(a: list[tuple[int, str]], b: list[tuple[int, str]], length: int) -> list[tuple[int, int]]:
    """Start lines (in a, in b) of every run of ``length`` consecutive lines of the same shapes."""
    starts: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(b) - length + 1):
        starts.setdefault(tuple(s for _, s in b[i:i + length]), []).append(b[i][0])
    return [(a[i][0], j) for i in range(len(a) - length + 1)
            for j in starts.get(tuple(s for _, s in a[i:i + length]), [])]


def test_no_two_trackers_share_a_block_of_six_same_shaped_lines():
    assert len(TRACKERS) >= 6  # console, jsonl, tensorboard, wandb, csv, mlflow
    shared = [(a.name, b.name, runs_in_both(shapes(a), shapes(b), SAME_SHAPED_RUN))
              for i, a in enumerate(TRACKERS) for b in TRACKERS[i + 1:]]
    assert [(a, b, runs) for a, b, runs in shared if runs] == []


def test_the_engines_share_no_block_of_six_same_shaped_lines():
    torch_engine, deepspeed_engine = shapes(PACKAGE / "engine.py"), shapes(PACKAGE / "deepspeed_engine.py")
    assert runs_in_both(torch_engine, deepspeed_engine, SAME_SHAPED_RUN) == []
    # The check does find such a block: the engine against itself.
    assert runs_in_both(torch_engine, torch_engine, SAME_SHAPED_RUN)


def tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    if not found.exists() and not shutil.which(name):
        pytest.skip(f"{name} is not installed (pip install 'trackkit[test]')")
    return str(found) if found.exists() else name


@pytest.mark.slow
def test_mypy_passes_and_both_engines_are_engines():
    # pyproject.toml names the packages (trackkit, reference_trainer). build_engine returns both
    # engines as an Engine: mypy checks that each has every member of the Protocol.
    result = subprocess.run([tool("mypy")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing():
    result = subprocess.run([tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_layer_imports_no_trainer_and_lists_the_namespaces_once():
    """trackkit serves any training loop: it never imports the reference trainer, and the built-in
    namespaces are listed in namespaces.py alone (every other module asks it)."""
    builtin = {"train", "eval", "epoch", "final"}
    imports, lists = [], []
    for path in sorted((REPO / "trackkit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            imports += [f"{path.name}:{node.lineno}" for name in names if name.split(".")[0] == "reference_trainer"]
            listed = (node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set))
                      else [*node.keys, *node.values] if isinstance(node, ast.Dict) else [])
            if listed and path.name != "namespaces.py":
                strings = {e.value for e in listed if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if len(strings & builtin) >= 3:
                    lists.append(f"{path.name}:{node.lineno}")
    assert imports == [] and lists == []
