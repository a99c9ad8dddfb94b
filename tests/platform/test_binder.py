"""Binder as repo2docker would build it, without Docker: read ``binder/`` only, run postBuild, then start.

repo2docker, when a ``binder/`` folder exists, ignores the repository's root
configuration and uses ``binder/environment.yml`` (conda build pack), then runs
``binder/postBuild`` once at build time and ``binder/start`` at every launch.
Here the environment is this virtual environment (the environment files are
checked equal to it by tests/test_environment_files.py); postBuild runs in a
child environment that sees these packages but not the editable latentsky, so
it really installs the package and prepares the sample's results from the
installed copy, in a temporary HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BINDER = REPO / "binder"
BIN = Path(sys.executable).parent

#: Files repo2docker reads in binder/ that would change the build pack (a Dockerfile replaces everything).
OTHER_BUILD_PACKS = (
    "Dockerfile",
    "requirements.txt",
    "Pipfile",
    "Project.toml",
    "REQUIRE",
    "install.R",
    "runtime.txt",
    "apt.txt",
    "setup.py",
    "default.nix",
    "flake.nix",
)


def _key(requirement: str) -> str:
    import re

    from packaging.requirements import Requirement

    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def test_binder_folder_is_what_repo2docker_reads():
    env = yaml.safe_load((BINDER / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert all("==" in req for req in pip), "every Binder dependency is pinned"
    from packaging.requirements import Requirement

    linux = {"sys_platform": "linux", "platform_machine": "x86_64"}  # Binder's machines
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # Binder installs latentsky with its [jupyter] extra (the Lab, the kernel, the proxy for the app)
    declared = {
        _key(d)
        for d in project["dependencies"] + project["optional-dependencies"]["jupyter"]
        if Requirement(d).marker is None or Requirement(d).marker.evaluate(linux)
    }
    assert {"jupyter-server-proxy", "jupyterlab", "panel"} <= declared <= {_key(r) for r in pip}
    # The package is installed by postBuild, not by the environment file (repo2docker has no repo yet then).
    assert not any(r.lstrip("-e ").strip() in (".", "..") for r in pip)
    present = sorted(p.name for p in BINDER.iterdir() if p.name in OTHER_BUILD_PACKS)
    assert not present, f"binder/ holds {present}: repo2docker would switch build pack"


@pytest.mark.parametrize("name", ["postBuild", "start"])
def test_scripts_are_executable_bash(name):
    path = BINDER / name
    assert path.stat().st_mode & 0o111, f"binder/{name} is not executable (repo2docker runs it directly)"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_start_ends_by_exec_of_its_arguments():
    lines = [
        ln.strip()
        for ln in (BINDER / "start").read_text().splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    assert lines[-1] == 'exec "$@"'


def test_the_proxy_entry_point_is_registered():
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="jupyter_serverproxy_servers") if ep.name == "latentsky"]
    config = ep.load()()
    assert config["launcher_entry"]["title"] == "latentsky explorer"
    assert "{unix_socket}" in config["command"] and "{base_url}latentsky" in config["command"]
    assert config["unix_socket"] is True  # no TCP port another account could reach
    assert config["absolute_url"] is True
    assert Path(config["launcher_entry"]["icon_path"]).read_text().startswith("<svg")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """postBuild run as on Binder (from the repository root, in a fresh HOME), in a child environment."""
    tmp = tmp_path_factory.mktemp("binder")
    home, venv = tmp / "home", tmp / "env"
    home.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    child_site = Path(
        subprocess.check_output(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # The child sees this environment's packages (a plain path: the editable latentsky's .pth is not read).
    (child_site / "parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTSKY_", "XDG_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(
        HOME=str(home),
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        MPLCONFIGDIR=str(home / ".config" / "matplotlib"),
    )
    # repo2docker copies the repository into the image and runs postBuild there; so do we (pip's build
    # leaves build/ and *.egg-info in the tree it builds from, which must not be the working copy).
    repo = tmp / "repo"
    shutil.copytree(
        REPO,
        repo,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "demo-output", "node_modules"
        ),
    )
    t0 = time.monotonic()
    run = subprocess.run(
        [str(repo / "binder" / "postBuild")], cwd=repo, env=env, capture_output=True, text=True, timeout=1500
    )  # the sample's pipeline: about 3 minutes on 2 quiet cores
    elapsed = time.monotonic() - t0
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return {"home": home, "venv": venv, "env": env, "elapsed": elapsed, "log": run.stdout + run.stderr, "repo": repo}


def test_post_build_installs_the_package(built):
    out = subprocess.check_output(
        [
            str(built["venv"] / "bin" / "python"),
            "-c",
            "import latentsky, latentsky.data as d; from latentsky.jupyter_proxy import ICON; "
            "print(latentsky.__file__); print(d.sample_path()); print(ICON.exists())",
        ],
        env=built["env"],
        text=True,
        cwd=built["home"],
    )
    module, sample, icon = out.split()
    assert icon == "True", "the launcher icon is not in the package"
    assert module.startswith(str(built["venv"])), f"latentsky imported from {module}, not the installed copy"
    assert Path(sample, "harps").is_dir() and Path(sample, "sdss").is_dir(), "the sample is not in the package"
    assert (built["venv"] / "bin" / "latentsky").exists()


def _start(built, home: Path, *command, **env) -> subprocess.CompletedProcess:
    """binder/start of the built image (REPO_DIR: the repository copy postBuild ran in) with ``command``."""
    environ = dict(built["env"], HOME=str(home), REPO_DIR=str(built["repo"]), **env)
    return subprocess.run(
        [str(built["repo"] / "binder" / "start"), *command],
        env=environ,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )


OPEN_APP_DATA = (
    "import json, os, time; t = time.monotonic(); from latentsky.ui.app import load_data; "
    "d = load_data(); s = d.spectrum(0); print(json.dumps({'label': d.label, 'n': len(d), "
    "'model': s['model'] is not None, 'app_data': os.environ.get('LATENTSKY_APP_DATA'), "
    "'s': time.monotonic() - t}))"
)


def test_post_build_prepares_the_sample_results_in_the_image(built):
    results = built["repo"] / "prepared-results"
    for name in ("latent.parquet", "model.keras", "metrics.json", "map.png", "store/catalog.parquet"):
        assert (results / name).exists(), f"{name} missing; postBuild log:\n{built['log'][-2000:]}"
    assert not (built["home"] / ".cache" / "latentsky" / "sample-results").exists(), "prepared in the home"
    # The app opens them (the pipeline's map, not the PCA fallback, with the reconstruction), without preparing.
    run = _start(built, built["home"], str(built["venv"] / "bin" / "python"), "-c", OPEN_APP_DATA)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.splitlines()[-1])
    assert got["n"] == 125 and "PCA" not in got["label"] and got["model"], got
    assert got["app_data"] == str(results), got
    assert got["s"] < 60, got
    assert built["elapsed"] < 900, f"postBuild took {built['elapsed']:.0f} s"


def test_start_execs_the_notebook_command_with_binder_settings(built):
    probe = [
        str(built["venv"] / "bin" / "python"),
        "-c",
        "import json, os; print(json.dumps({k: os.environ.get(k) for k in "
        "('OMP_NUM_THREADS', 'TF_CPP_MIN_LOG_LEVEL')}))",
    ]
    run = _start(built, built["home"], *probe)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    # The image holds the results, so start prepares nothing in the background.
    assert not (built["home"] / ".cache" / "latentsky" / "prepare.log").exists()
    # A failing command's status comes back unchanged (exec, not a child).
    assert _start(built, built["home"], "bash", "-c", "exit 7").returncode == 7


def test_start_in_an_empty_home_volume_copies_the_course_and_keeps_edits(built, tmp_path):
    """A hub mounts an empty persistent volume over the home: the course appears there, results are shared."""
    home = tmp_path / "volume"
    home.mkdir()
    run = _start(built, home, "true")
    assert run.returncode == 0, run.stderr
    course = sorted(p.name for p in (home / "notebooks").glob("*.ipynb"))
    assert course == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")) and "00_quickstart.ipynb" in course
    assert (home / "notebooks" / "images").is_dir()
    assert not (home / ".cache" / "latentsky" / "prepare.log").exists(), "prepared again although the image has them"
    # A student's edit survives the next start; a notebook the home lacks (deleted, or new in the image) comes back.
    edited = home / "notebooks" / "00_quickstart.ipynb"
    edited.write_text('{"edited": "by the student"}')
    (home / "notebooks" / "01_catalogs_images_spectra.ipynb").unlink()
    assert _start(built, home, "true").returncode == 0
    assert edited.read_text() == '{"edited": "by the student"}'
    assert (home / "notebooks" / "01_catalogs_images_spectra.ipynb").exists()


def test_start_names_unprepared_shared_results_and_prepares_the_users_own(built, tmp_path):
    empty = tmp_path / "shared"
    empty.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    run = _start(built, home, "bash", "-c", "echo ${LATENTSKY_APP_DATA:-unset}", LATENTSKY_APP_DATA=str(empty))
    assert run.returncode == 0 and run.stdout.strip() != str(empty)
    assert f"LATENTSKY_APP_DATA={empty} holds no prepared results" in run.stderr
    cache = home / ".cache" / "latentsky"
    pid = int((cache / "prepare.pid").read_text()) if (cache / "prepare.pid").exists() else None
    try:
        # the image's own results are used instead when it has them; else this user's are prepared
        assert run.stdout.strip() == str(built["repo"] / "prepared-results") or pid is not None
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_shared_results_open_read_only(built, tmp_path):
    """Prepared once, read by everybody: the shared results, without write permission, open (map, a spectrum and
    its reconstruction from the trained model) and nothing is written there.  Where the tests run as root,
    the probe runs without root's capabilities (setpriv), so file modes bind it as they bind any user."""
    import stat

    results = tmp_path / "shared" / "results"
    shutil.copytree(built["repo"] / "prepared-results", results, ignore=shutil.ignore_patterns("checkpoints"))
    for path in [results, *results.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = sorted((str(p), p.stat().st_mtime_ns) for p in results.rglob("*"))
    home = tmp_path / "home"
    home.mkdir()
    env = dict(built["env"], HOME=str(home), LATENTSKY_APP_DATA=str(results))
    cmd = [str(built["venv"] / "bin" / "python"), "-c", OPEN_APP_DATA]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux): root would write anyway")
        cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *cmd]
    try:
        run = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        got = json.loads(run.stdout.splitlines()[-1])
        assert got["n"] == 125 and got["model"] and got["label"] == str(results), got
        assert sorted((str(p), p.stat().st_mtime_ns) for p in results.rglob("*")) == before, (
            "wrote into the shared results"
        )
    finally:
        for path in [results, *results.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)  # so pytest can clean up
