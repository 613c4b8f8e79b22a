"""Which modules may import which: batch scoring runs on every Spark worker and never loads the training stack."""
from __future__ import annotations

import ast
from pathlib import Path

import visionlake

PACKAGE = Path(visionlake.__file__).parent
# The Horovod launcher, the training loop and the trainers: the driver and the ranks of a training job only.
TRAINING = {"launcher", "loop", "checkpoints", "train", "generative", "detectors"}


def imported_modules(module: str) -> set[str]:
    """The visionlake modules ``module`` imports anywhere in its source, function-level imports included."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("visionlake"):
            names = [node.module] if node.module != "visionlake" else [f"visionlake.{a.name}" for a in node.names]
            found.update(name.split(".")[1] for name in names if "." in name)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("visionlake."))
    return found


def reachable_from(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen and (PACKAGE / f"{current}.py").exists():
            seen.add(current)
            todo.extend(imported_modules(current))
    return seen


def test_scoring_never_reaches_the_training_stack():
    for entry in ("score", "scorers", "tracking"):
        assert not reachable_from(entry) & TRAINING, (entry, sorted(reachable_from(entry) & TRAINING))


def test_the_rule_sees_function_level_imports():
    assert "detectors" in imported_modules("pipeline")  # run_demo imports train_detector inside the function
    assert "generative" in reachable_from("detectors")


def test_file_uris_are_taken_apart_in_one_place():
    copies = [path.name for path in PACKAGE.glob("*.py")
              if path.name != "uris.py" and ('r"^file:' in path.read_text() or '[len("file:"):]' in path.read_text())]
    assert not copies, f"use visionlake.uris instead of parsing file: URIs in {copies}"


def test_no_module_defines_a_name_it_also_imports():
    """A definition that shadows an import (``from visionlake.uris import local_path`` then ``def local_path``)
    makes every call in the module call itself."""
    clashes = []
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.asname or alias.name.split(".")[0] for node in tree.body
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        clashes += [f"{path.name}: {name}" for name in sorted(imported & defined)]
    assert not clashes, clashes
