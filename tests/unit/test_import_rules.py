"""Which layer may import which (ARCHITECTURE.md): batch scoring runs on every Spark worker and never loads the
training stack, the lake knows nothing of the stages above it, and shared modules import no stage."""
from __future__ import annotations

import ast
import pickle
from pathlib import Path

import visionlake

PACKAGE = Path(visionlake.__file__).parent
SUBPACKAGES = {"lake", "ingest", "models", "evaluate", "train", "score", "operate"}
# Each layer and the layers it may import. Top-level modules (config, console, progress, spark, tracking, uris)
# are the shared layer; `scorers` is only the shim old pickles load through.
MAY_IMPORT = {
    "shared": {"shared"},
    "lake": {"shared", "lake"},
    "ingest": {"shared", "lake", "ingest"},
    "models": {"shared", "lake", "models"},
    "evaluate": {"shared", "lake", "models", "evaluate"},
    "train": {"shared", "lake", "models", "evaluate", "train"},
    "score": {"shared", "lake", "ingest", "models", "evaluate", "score"},
    "operate": {"shared", "lake", "ingest", "models", "evaluate", "train", "score", "operate"},
    "shim": {"models"},
}


def all_modules() -> list[str]:
    """Every module of the package as a dotted name relative to it, e.g. ``lake.store`` or ``config``."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names.append(".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts))
    return [name for name in names if name]


def layer_of(module: str) -> str:
    top = module.split(".")[0]
    return top if top in SUBPACKAGES else "shim" if module == "scorers" else "shared"


def source_of(module: str) -> str:
    path = PACKAGE / (module.replace(".", "/") + ".py")
    return (path if path.exists() else PACKAGE / module.replace(".", "/") / "__init__.py").read_text()


def imported_modules(source: str) -> set[str]:
    """The visionlake modules a source imports anywhere, function-level imports included."""
    known = set(all_modules())
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "visionlake":
            base = node.module.partition(".")[2]
            for alias in node.names:  # `from visionlake.lake import manifest` imports the module lake.manifest
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.add(candidate if candidate in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name.partition(".")[2] for a in node.names if a.name.startswith("visionlake."))
    return found - {""}


def violations(module: str, source: str) -> list[str]:
    allowed = MAY_IMPORT[layer_of(module)]
    return [f"{module} imports {name}" for name in sorted(imported_modules(source)) if layer_of(name) not in allowed]


def reachable_from(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(imported_modules(source_of(current)))
    return seen


def test_every_import_follows_the_layer_rule():
    broken = [line for module in all_modules() for line in violations(module, source_of(module))]
    assert not broken, broken


def test_the_rule_catches_a_scoring_module_that_imports_training_inside_a_function():
    source = "def score():\n    from visionlake.train.loop import run_loop\n"
    assert violations("score.job", source) == ["score.job imports train.loop"]
    assert violations("lake.store", "from visionlake.ingest import labels\n") == ["lake.store imports ingest.labels"]
    assert violations("operate.cli", source) == []


def test_scoring_never_reaches_the_training_stack():
    for entry in ("score.job", "score.synthetic", "models.scorers", "tracking"):
        training = sorted(name for name in reachable_from(entry) if layer_of(name) == "train")
        assert not training, (entry, training)


def test_the_rule_sees_function_level_imports():
    assert "train.detectors" in imported_modules(source_of("operate.pipeline"))  # imported inside run_demo
    assert "train.generative" in reachable_from("train.detectors")


def test_scorers_registered_under_the_old_module_path_still_unpickle():
    from visionlake.models.scorers import AnomalyScorer

    old_reference = b"cvisionlake.scorers\nAnomalyScorer\n."  # what versions registered before the move name
    assert pickle.loads(old_reference) is AnomalyScorer
    assert b"visionlake.models.scorers" in pickle.dumps(AnomalyScorer)
    assert not [m for m in all_modules() if "scorers" in imported_modules(source_of(m))], "import models.scorers"


def test_file_uris_are_taken_apart_in_one_place():
    copies = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
              if path.name != "uris.py" and ('r"^file:' in path.read_text() or '[len("file:"):]' in path.read_text())]
    assert not copies, f"use visionlake.uris instead of parsing file: URIs in {copies}"


def test_no_module_defines_a_name_it_also_imports():
    """A definition that shadows an import (``from visionlake.uris import local_path`` then ``def local_path``)
    makes every call in the module call itself."""
    clashes = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.asname or alias.name.split(".")[0] for node in tree.body
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        clashes += [f"{path.relative_to(PACKAGE)}: {name}" for name in sorted(imported & defined)]
    assert not clashes, clashes
