"""The dependency set is declared once (pyproject.toml) and the conda/Binder files must agree with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _key(requirement: str) -> str:
    name = re.split(r"[\[<>=~! ]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_key(req): req.split("==")[1] for req in pip if "==" in req}


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_key(name)] = version.strip()
    return pins


def test_environment_files_and_pyproject_declare_the_same_dependencies():
    declared = {_key(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    root, binder = _pins(REPO / "environment.yml"), _pins(REPO / "binder" / "environment.yml")
    assert set(root) == declared, f"environment.yml differs from pyproject.toml: {set(root) ^ declared}"
    assert set(binder) == declared, f"binder/environment.yml differs from pyproject.toml: {set(binder) ^ declared}"
    assert root == binder


def test_environment_files_pin_the_tested_versions():
    constraints = _constraints()
    for name, version in _pins(REPO / "environment.yml").items():
        assert constraints.get(name) == version, f"{name}: environment.yml has {version}, constraints {constraints.get(name)}"


def test_every_declared_dependency_is_pinned():
    constraints = _constraints()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = project["dependencies"] + extras["test"] + extras["bench"]
    assert not [d for d in needed if _key(d) not in constraints]


def test_binder_installs_the_package():
    post_build = (REPO / "binder" / "postBuild").read_text()
    assert "pip install" in post_build and post_build.startswith("#!")
    assert (REPO / "binder" / "postBuild").stat().st_mode & 0o111
