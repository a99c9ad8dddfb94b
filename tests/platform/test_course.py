"""The course in notebooks/: seven notebooks in order, each with the standard header and exercises whose solutions
are hidden (collapsed) but executed, and nothing that needs the internet.  ``make test`` executes them (nbmake)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
COURSE = [
    "00_quickstart",
    "01_catalogs_images_spectra",
    "02_bulk_downloads",
    "03_echo_state_embedding",
    "04_autoencoder",
    "05_million_point_map",
    "06_reading_a_latent_map",
]


def _load(name: str) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def test_the_course_is_complete_and_numbered():
    present = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert present == COURSE


@pytest.mark.parametrize("name", COURSE)
def test_header_kernel_and_hidden_solutions(name):
    nb = _load(name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"  # papermill/nbclient need it
    header = _source(nb["cells"][0])
    assert header.startswith(f"# {name[:2]} ·"), header[:80]
    for field in ("Runtime:", "Level:", "Data:"):
        assert f"**{field}**" in header, f"{name}: header lacks {field}"
    assert "**Goal:**" in header or "**What it does:**" in header
    assert re.search(r"\*\*Runtime:\*\* (under|about) (a|\d+) minute", header), "runtime stated in minutes"

    exercises = [c for c in nb["cells"] if c["cell_type"] == "markdown" and _source(c).startswith("### Exercise")]
    solutions = [c for c in nb["cells"] if "solution" in c.get("metadata", {}).get("tags", [])]
    assert exercises, f"{name}: no exercise"
    assert len(solutions) == len(exercises)
    for cell in solutions:
        assert cell["cell_type"] == "code" and cell["metadata"]["jupyter"]["source_hidden"] is True
        assert _source(cell).startswith("# Solution")


@pytest.mark.parametrize("name", COURSE)
def test_offline(name):
    """No notebook names an internet host: the archives are the local one on 127.0.0.1."""
    code = "\n".join(_source(c) for c in _load(name)["cells"] if c["cell_type"] == "code")
    hosts = re.findall(r"https?://([^/\s\"']+)", code)
    assert all(h.startswith(("127.0.0.1", "localhost")) for h in hosts), hosts
    # Stored without outputs: what a student sees first is what running it gives.
    assert not [c for c in _load(name)["cells"] if c["cell_type"] == "code" and c.get("outputs")]


@pytest.mark.parametrize("name", COURSE + ["app"])
def test_ends_with_a_summary_and_references(name):
    last = _load(name)["cells"][-1]
    text = _source(last)
    assert last["cell_type"] == "markdown" and text.startswith("## Summary") and "## References" in text, text[:200]
    words = " ".join(text.split())
    for cited in ("Gianniotis", "Rodan", "McInnes", "ESO Science Archive Facility", "Sloan Digital Sky Survey"):
        assert cited in words, f"{name}: the references do not cite {cited}"


@pytest.mark.parametrize("name", COURSE + ["app"])
def test_no_issue_numbers_of_other_projects(name):
    """Students read the notebooks: no "astroquery #2211" style references to other projects' trackers."""
    text = "\n".join(_source(c) for c in _load(name)["cells"])
    found = re.findall(r"\b[\w-]+ #\d+|issues/\d+|pull/\d+", text)
    assert not found, found
