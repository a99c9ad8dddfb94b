"""Notebook 01's headline story, "28x28 cutouts of the quasars", gives images offline, and says they are synthetic.

The classroom archive ships no SDSS imaging: the notebook cuts the quasars from the local archive's synthetic
sky.  Read from the executed notebook (the session's run, shared with the figure checks): the cube has cells on
the footprint, the figure of them shows, and the text says the pixels are not real data.
"""

from __future__ import annotations

import re
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_catalogs_images_spectra.ipynb"
NAME = NOTEBOOK.name


def _quasar_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code" and "fetch_cutouts(quasars" in c.source)


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_the_quasar_cube_has_cells_on_the_footprint(executed):
    nb = executed(NAME)
    cell = _quasar_cell(nb)
    found = re.search(r"(\d+) of (\d+) quasars on the \(synthetic\) SDSS footprint", _text(cell))
    assert found, _text(cell)[:500]
    on, total = map(int, found.groups())
    assert total > 10 and on >= total // 2, (on, total)  # most of the sample's quasars, as SDSS covers them
    shape = re.search(r"\((\d+), 3, 28, 28\)", _text(cell))
    assert shape and int(shape.group(1)) == total
    following = nb.cells[nb.cells.index(cell) + 1]
    assert any("image/png" in o.get("data", {}) for o in following.get("outputs", [])), "the cutouts are not shown"


def test_the_notebook_says_the_quasar_images_are_synthetic():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    words = " ".join(" ".join(c.source for c in nb.cells if c.cell_type == "markdown").split())
    assert "synthetic" in words.split("**Runtime:**", 1)[1].split("Next:", 1)[0], "the header's Data line"
    assert "SYNTHSKY = T" in words and "not real data" in words
    assert "off-footprint cube" not in words
