"""The lock on every common laptop: resolve requirements/constraints.txt for one platform and check the wheels.

    python requirements/platforms.py check                 # every platform below; exit 1 on a gap
    python requirements/platforms.py check macos-arm64     # one platform
    python requirements/platforms.py check --full          # pip reads every package's metadata (minutes)
    python requirements/platforms.py binder                # rewrite binder/environment.yml from the lock

``check --full`` walks the dependency graph of latentsky's runtime dependencies and its ``[jupyter]`` extra
(pyproject.toml, :data:`INSTALLED_EXTRAS`) as it would be
installed on the platform: environment markers (``sys_platform``, ``platform_machine``, extras) evaluated for
that platform, every version taken from the lock, and for each level one ``pip install --dry-run --no-deps
--only-binary :all: --platform TAG ...`` that finds the pinned wheel for the platform (pip reads the wheel's
metadata, without downloading it, where the index serves it).  It fails when a package of the graph has no
pin in the lock (it would float) or its pinned version has no wheel for the platform.  pip itself evaluates
markers for the machine it runs on, not for ``--platform``, which is why the walk is done here (pinned
versions only, so no back-tracking resolver is needed).  Plain ``check`` does the same walk reading the
requirements of the packages installed here from their installed copies (the same versions) and asks the
index only about wheels that differ by platform (not ``py3-none-any``), which takes seconds, not minutes.

``binder`` writes binder/environment.yml pinning the whole runtime graph for Linux x86_64 (Binder's), from
this environment's installed metadata, so that a Binder image holds exactly the tested versions.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "constraints.txt"
PYTHON = "3.11"
#: The Python release the lock is resolved for (some pins need a recent 3.11: soupsieve asks for >= 3.11.5).
PYTHON_RELEASE = "3.11.7"

# glibc 2.35 or older (Ubuntu 22.04, Debian 12 have 2.35 and 2.36), with the legacy names of 2.17, 2.12 and 2.5
_MANYLINUX = [f"manylinux_2_{v}" for v in range(5, 36)] + ["manylinux2014", "manylinux2010", "manylinux1"]
#: Platforms a student's laptop (or Binder, a hub node) may be: wheel tags pip may pick, and marker values.
PLATFORMS = {
    "linux-x86_64": {
        "tags": [f"{t}_x86_64" for t in _MANYLINUX],
        "env": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"},
    },
    "linux-aarch64": {
        "tags": [f"{t}_aarch64" for t in _MANYLINUX],
        "env": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64", "os_name": "posix"},
    },
    # pip expands a macOS tag to every older macOS and to universal2 wheels
    "macos-arm64": {
        "tags": ["macosx_14_0_arm64"],
        "env": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64", "os_name": "posix"},
    },
    "windows-amd64": {
        "tags": ["win_amd64"],
        "env": {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64", "os_name": "nt"},
    },
}


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``{canonical name: version}`` of the lock (``name==version`` lines)."""
    pins = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise ValueError(f"{path}:{n}: not a pin (name==version): {line!r}")
        name, version = line.split("==", 1)
        pins[canonical(name)] = version.strip()
    return pins


INSTALLED_EXTRAS = ("jupyter",)
"""The extras of pyproject.toml that a laptop's environment and Binder install beside the runtime dependencies:
JupyterLab, where the course runs."""


def runtime_requirements(extras=INSTALLED_EXTRAS) -> list[Requirement]:
    """latentsky's runtime dependencies as declared in pyproject.toml, with those of ``extras``."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    return [Requirement(r) for r in project["dependencies"] + [d for e in extras for d in optional[e]]]


def applies(req: Requirement, env: dict, extras=()) -> bool:
    """Whether ``req`` is needed on the platform ``env`` by a package installed with ``extras``."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in (*extras, ""))


def pip_metadata(platform: str, pins: dict[str, str]) -> dict[str, list[str]]:
    """``{name: requires_dist}`` of the pinned wheels of ``pins`` for ``platform``, from pip's dry-run report.

    Raises ``LookupError`` naming every package whose pinned version has no wheel for the platform.
    """
    tags = [a for t in PLATFORMS[platform]["tags"] for a in ("--platform", t)]
    # fast-deps: where the index serves no separate metadata file (PEP 658), pip reads the metadata from the
    # wheel's end with HTTP range requests instead of downloading every wheel (TensorFlow's are 350-600 MB)
    base = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--no-deps",
        "--quiet",
        "--use-feature=fast-deps",
        "--only-binary",
        ":all:",
        *tags,
        "--python-version",
        PYTHON_RELEASE,
        "--implementation",
        "cp",
        "--abi",
        "cp" + PYTHON.replace(".", ""),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        specs = [f"{name}=={version}" for name, version in sorted(pins.items())]
        run = subprocess.run(
            [*base, "--target", str(Path(tmp) / "t"), "--report", str(report), *specs], capture_output=True, text=True
        )
        if run.returncode != 0:
            missing = []
            for spec in specs:  # which ones: ask for each alone
                one = subprocess.run([*base, "--target", str(Path(tmp) / "t"), spec], capture_output=True, text=True)
                if one.returncode != 0:
                    last = [ln for ln in one.stderr.splitlines() if ln.startswith("ERROR")] or [one.stderr[-300:]]
                    missing.append(f"{spec} ({last[-1].strip()})")
            raise LookupError(f"{platform}: no wheel for " + "; ".join(missing or [run.stderr[-1000:]]))
        installed = json.loads(report.read_text())["install"]
    return {canonical(item["metadata"]["name"]): item["metadata"].get("requires_dist") or [] for item in installed}


def _installed(name: str, version: str):
    """This environment's distribution of ``name`` when it is the pinned version, else None."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(name)
    except PackageNotFoundError:
        return None
    return dist if dist.version == version else None


def installed_metadata(platform: str, pins: dict[str, str]) -> dict[str, list[str]]:
    """``{name: requires_dist}`` from this environment's installed copies (the platform it runs on)."""
    out = {}
    for name, version in pins.items():
        dist = _installed(name, version)
        if dist is None:
            raise LookupError(f"{name}=={version} is not installed here")
        out[name] = dist.requires or []
    return out


def local_first_metadata(platform: str, pins: dict[str, str]) -> dict[str, list[str]]:
    """Requirements of the pins installed here read from their installed copies (a wheel's requirements do
    not depend on its platform tag: markers do, and they are evaluated per platform); the others from pip."""
    local = {n: v for n, v in pins.items() if _installed(n, v) is not None}
    out = installed_metadata(platform, local)
    others = {n: v for n, v in pins.items() if n not in local}
    if others:
        out.update(pip_metadata(platform, others))
    return out


def is_pure(name: str, version: str) -> bool:
    """True when the pinned version is installed here from a pure-Python wheel (``py3-none-any``: one file
    for every platform, nothing to check per platform)."""
    dist = _installed(name, version)
    wheel = dist.read_text("WHEEL") if dist is not None else None
    tags = [line.split(":", 1)[1].strip() for line in (wheel or "").splitlines() if line.startswith("Tag:")]
    return bool(tags) and all(tag.endswith("-none-any") for tag in tags)


def resolve(platform: str, *, lock: dict[str, str] | None = None, metadata=pip_metadata) -> dict[str, str]:
    """The pinned runtime graph of latentsky on ``platform``: ``{name: version}``.

    Raises ``LookupError`` for a package of the graph without a pin (it would float) or without a wheel.
    """
    lock = read_lock() if lock is None else lock
    env = PLATFORMS[platform]["env"]
    extras: dict[str, set[str]] = {}  # extras each package is installed with
    pending = set()
    for req in runtime_requirements():
        if applies(req, env):
            extras.setdefault(canonical(req.name), set()).update(req.extras)
            pending.add(canonical(req.name))
    requires: dict[str, list[str]] = {}
    changed = True
    while pending or changed:
        unpinned = sorted(name for name in pending if name not in lock)
        if unpinned:
            raise LookupError(f"{platform}: needed but not pinned in {LOCK.name}: {', '.join(unpinned)}")
        if pending:
            requires.update(metadata(platform, {name: lock[name] for name in pending}))
        pending, changed = set(), False
        for name, lines in list(requires.items()):  # the whole graph again: an extra may have been added
            for line in lines:
                req = Requirement(line)
                if not applies(req, env, extras.get(name, ())):
                    continue
                dep = canonical(req.name)
                known = extras.setdefault(dep, set())
                if not set(req.extras) <= known:
                    known.update(req.extras)
                    changed = True
                if dep not in requires:
                    pending.add(dep)
    return {name: lock[name] for name in sorted(requires)}


INDEX = "https://pypi.org/simple"


def supported_tags(platform: str) -> set:
    """Wheel tags a CPython 3.11 interpreter on ``platform`` accepts (``packaging.tags`` objects)."""
    from packaging import tags

    plats = PLATFORMS[platform]["tags"]
    if platform.startswith("macos"):
        plats = list(tags.mac_platforms((14, 0), "arm64"))
    version = tuple(int(v) for v in PYTHON.split("."))
    return set(tags.cpython_tags(version, platforms=plats)) | set(tags.compatible_tags(version, platforms=plats))


def index_files(name: str) -> list[dict]:
    """The files of ``name`` on the package index (its PEP 691 JSON page: the one pip reads)."""
    import requests

    r = requests.get(f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}, timeout=60)
    r.raise_for_status()
    return r.json()["files"]


def _python_ok(requires_python: str | None) -> bool:
    """Whether a file's ``Requires-Python`` admits :data:`PYTHON_RELEASE` (an unreadable one is not held
    against it: pip ignores it too)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return not requires_python or PYTHON_RELEASE in SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True


def missing_wheels(pins: dict[str, str], platforms) -> dict[str, list[str]]:
    """``{platform: ["name==version", ...]}``: pins with no wheel on the index for the platform (or one
    whose ``Requires-Python`` excludes :data:`PYTHON_RELEASE`).  One index page per package, side by side."""
    from concurrent.futures import ThreadPoolExecutor

    from packaging.utils import InvalidWheelFilename, parse_wheel_filename
    from packaging.version import Version

    with ThreadPoolExecutor(8) as pool:
        pages = dict(zip(pins, pool.map(index_files, pins)))
    accepted = {p: supported_tags(p) for p in platforms}
    missing = {p: [] for p in platforms}
    for name, version in sorted(pins.items()):
        wheels = []
        for f in pages[name]:
            if not f["filename"].endswith(".whl") or f.get("yanked"):
                continue
            try:
                _, v, _, file_tags = parse_wheel_filename(f["filename"])
            except InvalidWheelFilename:
                continue
            if v == Version(version) and _python_ok(f.get("requires-python")):
                wheels.append(file_tags)
        for p in platforms:
            if not any(file_tags & accepted[p] for file_tags in wheels):
                missing[p].append(f"{name}=={version}")
    return {p: names for p, names in missing.items() if names}


def check(platforms, *, full: bool = False) -> dict:
    """Every platform's pinned graph, each package checked to have a wheel there;
    ``{platform: pins or LookupError}``.

    By default the graph's requirements are read from this environment where it holds the pinned version
    (pip is asked only about the others), and the index pages of the platform-specific packages (not
    ``py3-none-any``) are read once for all platforms.  ``full`` asks pip for every package and platform
    (minutes: pip reads each package's metadata, one index page per package and platform).
    """
    from concurrent.futures import ThreadPoolExecutor

    def graph(platform):
        try:
            return resolve(platform, metadata=pip_metadata if full else local_first_metadata)
        except LookupError as err:
            return err

    with ThreadPoolExecutor(len(platforms)) as pool:
        outcome = dict(zip(platforms, pool.map(graph, platforms)))
    if not full:
        resolved = [p for p in platforms if not isinstance(outcome[p], Exception)]
        to_check = {n: v for p in resolved for n, v in outcome[p].items() if not is_pure(n, v)}
        for p, names in missing_wheels(to_check, resolved).items():
            wanted = [n for n in names if n.split("==")[0] in outcome[p]]
            if wanted:
                outcome[p] = LookupError(f"{p}: no wheel for {', '.join(wanted)}")
    return outcome


def binder_environment(pins: dict[str, str]) -> str:
    """The text of binder/environment.yml pinning ``pins`` (repo2docker's conda build pack)."""
    lines = [
        "# repo2docker (Binder) reads only binder/; binder/postBuild installs latentsky itself.",
        "# Generated by `python requirements/platforms.py binder`: latentsky's whole runtime dependency graph",
        "# for Linux x86_64, every version from requirements/constraints.txt (the lock `make test` tests).",
        "# tests/test_environment_files.py fails if it drifts from the lock.",
        "name: latentsky",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={PYTHON}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {name}=={version}" for name, version in sorted(pins.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["binder"]:
        pins = resolve("linux-x86_64", metadata=installed_metadata)
        (REPO / "binder" / "environment.yml").write_text(binder_environment(pins))
        print(f"binder/environment.yml: {len(pins)} pins")
        return 0
    if args[:1] == ["check"]:
        failed = 0
        names = [a for a in args[1:] if a != "--full"]
        for platform, outcome in check(names or list(PLATFORMS), full="--full" in args).items():
            if isinstance(outcome, Exception):
                print(f"FAIL {outcome}")
                failed += 1
            else:
                tf = next(
                    (f"{n}=={outcome[n]}" for n in ("tensorflow", "tensorflow-cpu") if n in outcome), "no TensorFlow"
                )
                print(f"ok   {platform}: {len(outcome)} packages, every one a pinned wheel ({tf})")
        return 1 if failed else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
