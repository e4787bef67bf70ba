"""The example notebooks execute without error (so they cannot rot).

Each notebook in ``examples/`` runs top to bottom in a fresh Jupyter kernel (nbclient);
any cell that raises fails the test with the cell's error. Needs ``nbclient``,
``ipykernel`` and ``matplotlib``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))

pytestmark = pytest.mark.slow


def test_there_are_notebooks() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert {
        "private_linear_regression",
        "private_logistic_regression",
        "robustness_tour",
        "audit_log",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    # ipywidgets (notebooks extra) present: no tqdm "IProgress not found" warning printed
    streams = "".join(
        str(o.get("text", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "IProgress not found" not in streams
    nbformat.write(nb, tmp_path / path.name)
