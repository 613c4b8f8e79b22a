"""Notebooks live in git without outputs (they are executed on the demo lake by tests/integration/test_operate.py)."""
from __future__ import annotations

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs():
    import nbformat

    assert [path.stem for path in NOTEBOOKS] == ["01_explore_lake", "02_models", "03_anomalies"]
    for path in NOTEBOOKS:
        cells = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
        assert all(cell.outputs == [] and cell.execution_count is None for cell in cells), \
            f"{path.name} has outputs: run `make notebooks-strip`"
