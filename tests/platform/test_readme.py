"""What a newcomer reads first: the licence, where to start, the Binder links, and runtimes that agree.

The runtime of preparing the sample's results is measured once (the README gives the measurement); the README,
the notebooks' headers and ``latentsky classroom --prepare-only``'s message state the same number of minutes.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _minutes(text: str) -> list[int]:
    """Every "about N minutes" / "N minutes" of a text, as numbers."""
    return [int(WORDS.get(n, n)) for n in re.findall(r"\b(\d+|" + "|".join(WORDS) + r") minutes?\b", text)]


def test_the_licence_is_the_one_pyproject_declares():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    text = (REPO / "LICENSE").read_text()
    assert declared == "BSD-3-Clause" and text.startswith("BSD 3-Clause License")
    assert "Redistribution and use in source and binary forms" in text


def test_start_here_goes_binder_hub_laptop():
    steps = re.findall(r"^\d\. \*\*(.+?)\*\*", _section("Start here"), flags=re.MULTILINE)
    assert len(steps) == 3, steps
    assert "Binder" in steps[0] and "hub" in steps[1] and "laptop" in steps[2], steps


def test_the_binder_badge_placeholder_is_explained_in_one_line():
    binder = _section("Binder")
    links = re.findall(r"https://mybinder\.org/v2/gh/([^/]+/[^/]+)/", binder)
    assert links and set(links) == {"ORG/latentsky"}
    explained = binder.split("\n\n")[1]
    assert explained.startswith("`ORG/latentsky` in both links stands for this repository's GitHub path")


def test_the_preparation_runtime_is_stated_alike_everywhere():
    from latentsky.commands.classroom import PREPARE_MINUTES

    sentences = [s for s in re.split(r"(?<=[.;:])\s", " ".join(README.split())) if "prepar" in s.lower()]
    for name in sorted((REPO / "notebooks").glob("*.ipynb")):
        header = "".join(json.loads(name.read_text())["cells"][0]["source"])
        sentences += [s for s in re.split(r"(?<=[.;])\s", " ".join(header.split())) if "prepare" in s]
    stated = {m for s in sentences for m in _minutes(s)}
    assert stated == {PREPARE_MINUTES}, [s for s in sentences if _minutes(s)]


def test_the_room_of_thirty_gives_its_measurement():
    room = README.split("### A room of thirty", 1)[1].split("\n## ", 1)[0]
    assert "CLASSROOM_TABLE" not in room
    table = [ln for ln in room.splitlines() if ln.startswith("|")]
    assert len(table) >= 3, "the bench's table"
    assert re.search(r"AMD|Intel|Apple|ARM", room), "the CPU of the measurement"


def test_the_hpc_recipe_states_no_runtime_of_its_own():
    """jobqueue.yaml's walltime points at the README's measured run time instead of stating another one."""
    text = (REPO / "binder" / "jupyterhub" / "dask" / "jobqueue.yaml").read_text()
    assert not _minutes(text)
    walltime = next(ln for ln in text.splitlines() if "walltime" in ln and "#" in ln)
    assert "README" in walltime and re.search(r"10\^6 in [\d.]+ minutes on \d+ cores", README)
