"""Every notebook runs from top to bottom, and every cell that draws a figure shows it.

Each notebook is executed with nbclient in a real kernel (as JupyterLab runs it; ``make test`` runs the
course this way), then read cell by cell: a cell that draws with matplotlib, shades with Datashader or
ends on a HoloViews/Panel object must have an image or a plot among its outputs.  A library call that
switches matplotlib's backend, or a HoloViews object printed as text because its notebook extension is
not loaded, leaves a figure cell without one.  Normal output carries no warnings.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ALL = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))

IMAGE = {"image/png", "image/svg+xml", "image/jpeg"}
PLOT = {"application/vnd.holoviews_exec.v0+json", "application/vnd.bokehjs_exec.v0+json"}
#: A cell draws with matplotlib when it calls one of these.
MATPLOTLIB = re.compile(r"\b(plt\.(subplots|figure|imshow|plot|scatter|hist)|fig\.subplots)\(")
#: A cell shows a Datashader image when its last line shades.
SHADE = re.compile(r"^(tf\.shade|tf\.set_background)\(")
#: A cell shows a HoloViews/Panel plot when it ends on one of these.
HOLOVIEWS = re.compile(r"(\.spectrum_plot\(\)|^explore|^app|^pn\.\w+\(.*\)|^hv\.\w+\(.*\))$")
#: Stderr lines that are warnings.
WARNING = re.compile(r"(Warning|WARNING|warn\()")


def _code(cell) -> list[str]:
    return [ln for ln in "".join(cell["source"]).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def expected_output(cell) -> set[str] | None:
    """The output types one of which a figure cell must show (None: the cell draws nothing)."""
    lines = _code(cell)
    if not lines or cell["cell_type"] != "code":
        return None
    if MATPLOTLIB.search("\n".join(lines)):
        return IMAGE
    last = lines[-1].strip()
    if SHADE.match(last):
        return IMAGE
    if HOLOVIEWS.search(last):
        return PLOT | IMAGE
    return None


def shown(cell) -> set[str]:
    """Output types of an executed cell."""
    kinds = set()
    for out in cell.get("outputs", []):
        kinds |= set(out.get("data", {}))
    return kinds


@pytest.fixture(scope="session")
def executed(tmp_path_factory, shared_results):
    """Runs a notebook once per session (kernel ``python3``, in notebooks/, with the environment binder/start
    gives a kernel: the shared prepared results, TensorFlow quiet); returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    cache = {}
    out_dir = tmp_path_factory.mktemp("executed")

    def run(name: str):
        if name not in cache:
            nb = nbformat.read(NOTEBOOKS / name, as_version=4)
            env_keep = dict(os.environ)
            os.environ.update(LATENTSKY_APP_DATA=str(shared_results), TF_CPP_MIN_LOG_LEVEL="3",
                              TF_ENABLE_ONEDNN_OPTS="0")
            try:
                NotebookClient(nb, timeout=900, kernel_name="python3",
                               resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
            finally:
                os.environ.clear()
                os.environ.update(env_keep)
            nbformat.write(nb, out_dir / name)  # kept for a look after a failure
            cache[name] = nb
        return cache[name]
    return run


@pytest.mark.parametrize("name", ALL)
def test_every_figure_cell_shows_its_figure(executed, name):
    nb = executed(name)
    missing = []
    for i, cell in enumerate(nb.cells):
        want = expected_output(cell)
        if want and not shown(cell) & want:
            first = _code(cell)[-1][:70]
            missing.append(f"cell {i} ({first!r}): shows {sorted(shown(cell)) or 'nothing'}, wanted one of {sorted(want)}")
    assert not missing, f"{name}: figures that do not show:\n" + "\n".join(missing)


@pytest.mark.parametrize("name", ALL)
def test_no_warnings_in_normal_output(executed, name):
    nb = executed(name)
    noisy = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            bad = [ln for ln in text.splitlines() if WARNING.search(ln)]
            if bad:
                noisy.append(f"cell {i}: {bad[0][:160]}")
    assert not noisy, f"{name}: warnings in the output:\n" + "\n".join(noisy)


@pytest.mark.parametrize("name", ALL)
def test_every_matplotlib_figure_has_a_title_and_its_legend(name):
    """Read from the source: a cell that draws with matplotlib sets a title, and labels it draws get a legend."""
    nb = json.loads((NOTEBOOKS / name).read_text())
    bad = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or expected_output(cell) is not IMAGE:
            continue
        code = "\n".join(_code(cell))
        if not MATPLOTLIB.search(code):
            continue
        if not re.search(r"(set_title|suptitle|plt\.title)\(", code):
            bad.append(f"cell {i}: no title")
        if re.search(r"\blabel=", code) and "legend(" not in code:
            bad.append(f"cell {i}: labelled lines without a legend")
    assert not bad, f"{name}:\n" + "\n".join(bad)


def test_the_rules_see_a_figure_cell():
    """The detection itself: a matplotlib cell, a shading cell and a HoloViews cell are figure cells."""
    cell = lambda src: {"cell_type": "code", "source": src}
    assert expected_output(cell("fig, ax = plt.subplots()\nax.plot([1])")) == IMAGE
    assert expected_output(cell("agg = c.points(t)\ntf.shade(agg)")) == IMAGE
    assert expected_output(cell("explore.tapped = 3\nexplore.spectrum_plot()")) >= PLOT
    assert expected_output(cell("print(1)")) is None
