"""The dependency set is declared once (pyproject.toml) and locked once (requirements/constraints.txt); the
conda and Binder files must agree with both, and the lock must install on every common laptop."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _platforms():
    spec = importlib.util.spec_from_file_location("platforms", REPO / "requirements" / "platforms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


platforms = _platforms()


def _key(requirement: str) -> str:
    return platforms.canonical(Requirement(requirement).name)


def _pip(path: Path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def _pins(path: Path) -> dict[str, str]:
    """``{name: version}`` of an environment file's pinned pip lines (``-c`` lines and the like skipped)."""
    pins = {}
    for line in _pip(path):
        if line.startswith("-"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{path.name}: {line} is not pinned"
        pins[platforms.canonical(req.name)] = spec.version
    return pins


def _declared() -> list[Requirement]:
    """The runtime dependencies and those of the extras a laptop and Binder install (``[jupyter]``)."""
    return platforms.runtime_requirements()


def test_conda_environment_declares_pyproject_dependencies_with_their_markers():
    declared = {platforms.canonical(r.name): r for r in _declared()}
    lines = {_key(line): Requirement(line) for line in _pip(REPO / "environment.yml") if not line.startswith("-")}
    assert set(lines) == set(declared), f"environment.yml differs from pyproject.toml: {set(lines) ^ set(declared)}"
    for name, req in lines.items():
        assert str(req.marker) == str(declared[name].marker), (
            f"{name}: markers differ ({req.marker} vs {declared[name].marker})"
        )
    # every indirect dependency pinned too: pip reads the lock (paths are relative to the file's folder)
    assert "-c requirements/constraints.txt" in _pip(REPO / "environment.yml")


def test_environment_files_pin_the_locked_versions():
    lock = platforms.read_lock()
    for path in (REPO / "environment.yml", REPO / "binder" / "environment.yml"):
        for name, version in _pins(path).items():
            assert lock.get(name) == version, f"{path.relative_to(REPO)}: {name} {version}, lock {lock.get(name)}"


def test_binder_pins_the_whole_runtime_graph_of_the_lock():
    """Binder installs exactly the tested versions of everything (nothing floats): the file is the lock's
    runtime graph for Linux x86_64 (`python requirements/platforms.py binder` writes it)."""
    graph = platforms.resolve("linux-x86_64", metadata=platforms.installed_metadata)
    binder = _pins(REPO / "binder" / "environment.yml")
    assert binder == graph, (
        f"binder/environment.yml is not the lock's runtime graph (rerun "
        f"`python requirements/platforms.py binder`): {sorted(set(binder) ^ set(graph))}"
    )
    assert {"tensorflow-cpu", "jupyter-server-proxy", "protobuf", "h5py"} <= set(binder)
    assert not {"pytest", "playwright", "tensorflow"} & set(binder)


def test_every_declared_dependency_is_pinned():
    lock = platforms.read_lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = project["dependencies"] + [d for group in extras.values() for d in group]
    assert not [d for d in needed if _key(d) not in lock]


def test_tensorflow_is_chosen_per_platform_by_markers():
    tf = {platforms.canonical(r.name): r for r in _declared() if r.name.startswith("tensorflow")}
    assert set(tf) == {"tensorflow", "tensorflow-cpu"}
    chosen = {}
    for name, spec in platforms.PLATFORMS.items():
        chosen[name] = [n for n, r in tf.items() if platforms.applies(r, spec["env"])]
    assert chosen == {
        "linux-x86_64": ["tensorflow-cpu"],
        "linux-aarch64": ["tensorflow"],
        "macos-arm64": ["tensorflow"],
        "windows-amd64": ["tensorflow-cpu"],
    }


def _index_reachable() -> bool:
    import requests

    try:
        return requests.head(f"{platforms.INDEX}/pip/", timeout=10).status_code < 500
    except requests.RequestException:
        return False


@pytest.mark.slow
def test_the_lock_installs_on_every_common_laptop():
    """Linux x86_64 and aarch64, macOS arm64, Windows: the pinned graph resolves and every package has a
    wheel for the platform on PyPI (a missing wheel means a student cannot install latentsky)."""
    if not _index_reachable():
        pytest.skip(f"{platforms.INDEX} is not reachable from here")
    outcome = platforms.check(list(platforms.PLATFORMS))
    failed = {p: str(o) for p, o in outcome.items() if isinstance(o, Exception)}
    assert not failed, failed
    assert outcome["macos-arm64"]["tensorflow"] == outcome["linux-aarch64"]["tensorflow"]


def test_binder_installs_the_package():
    post_build = (REPO / "binder" / "postBuild").read_text()
    assert "pip install" in post_build and post_build.startswith("#!")
    assert (REPO / "binder" / "postBuild").stat().st_mode & 0o111


def test_lock_lines_are_plain_pins():
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), line
