"""``latentsky classroom``: the course in a room without a good network.

Prepares the bundled sample's results (the ingested store and the pipeline's
latent map, in the cache folder; skipped when already there), starts the
local archive over the sample (ESO TAP/ObsCore, SDSS SkyServer and SAS,
hips2fits: the endpoints the course queries) and then JupyterLab on the
course's notebooks, with every ``LATENTSKY_*`` archive URL pointing at the
local archive and ``LATENTSKY_OFFLINE=1``, so no kernel ever waits on the
internet.  Ctrl-C (or closing JupyterLab) stops both.

    latentsky classroom                       # prepare, archive, JupyterLab on ./notebooks
    latentsky classroom --prepare-only        # before class, on each machine (what Binder's postBuild runs)
    latentsky classroom --prepare-only --out /srv/latentsky/results/sample
                                              # once, for every user of a hub: LATENTSKY_APP_DATA=that folder
    latentsky classroom --no-lab --port 8765  # only the archive (a teacher's machine: add --host 0.0.0.0)
    latentsky classroom --hub --users 30 --host 0.0.0.0
                                              # a room: a small JupyterHub for 30 students on this machine
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: Folder, under ``conf.cache_dir``, whose pipeline results the app and the course open first
#: (read by :meth:`latentsky.ui.data.LatentData.sample`).
SAMPLE_RESULTS = "sample-results"
#: Environment variable naming prepared results shared by every user (read-only), as the app reads it.
APP_DATA_ENV = "LATENTSKY_APP_DATA"
#: Minutes that preparing the sample's results takes on 2 cores, measured (the README's Binder section gives the
#: measurement; the README and notebook 06 state this number, a test checks they agree).
PREPARE_MINUTES = 5


def register(subparsers) -> None:
    """Add the ``classroom`` parser to the ``latentsky`` sub-commands."""
    p = subparsers.add_parser(
        "classroom",
        help="local archive + JupyterLab for a course without internet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--notebooks",
        type=Path,
        default=None,
        help="folder JupyterLab opens (default: ./notebooks when it exists, else .)",
    )
    p.add_argument(
        "--root", type=Path, default=None, help="folder of FITS files to serve (default: the bundled sample)"
    )
    p.add_argument("--host", default="127.0.0.1", help="interface of the archive (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port of the archive (default: a free one)")
    p.add_argument("--lab-port", type=int, default=8888, help="port of JupyterLab (default 8888)")
    p.add_argument(
        "--no-lab",
        action="store_true",
        help="start only the archive; print the settings and the JupyterLab command, serve until Ctrl-C",
    )
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="only prepare the bundled sample's results (store and latent map), then exit",
    )
    p.add_argument("--no-prepare", action="store_true", help="do not prepare the sample's results")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with --prepare-only: write the results, with the sample's store inside, to this folder "
        "(shared results for every user: set LATENTSKY_APP_DATA to it) instead of the cache",
    )
    hub = p.add_argument_group("a room of students (--hub): a small JupyterHub on this machine")
    hub.add_argument(
        "--hub",
        action="store_true",
        help="serve the course to a room: JupyterHub with a shared password, one server per student "
        "(needs `pip install jupyterhub` and `npm install -g configurable-http-proxy`)",
    )
    hub.add_argument("--users", type=int, default=30, help="most students with a running server (default 30)")
    hub.add_argument("--hub-port", type=int, default=8000, help="JupyterHub's port (default 8000)")
    hub.add_argument(
        "--password",
        default=None,
        help="the students' shared password (default: a new one, printed; or $LATENTSKY_CLASSROOM_PASSWORD)",
    )
    hub.add_argument(
        "--results",
        type=Path,
        default=None,
        help="prepared results to share (default: the sample's, prepared once in the cache)",
    )
    p.set_defaults(func=run)


def prepare_sample_results(
    cache_dir: Path | None = None, *, out: Path | None = None, progress=None, train: dict | None = None
) -> Path:
    """Ingest the bundled sample and run the pipeline on it, unless already done.

    The app (:func:`latentsky.ui.app.load_data`) and the course open these
    results first, so preparing them once (Binder's ``postBuild``, or before
    class) makes the first page open in seconds.

    Parameters
    ----------
    cache_dir : path-like, optional
        Cache folder (default ``conf.cache_dir``): the results go to ``cache_dir / "sample-results"``
        and the store to the cache's sample store.
    out : path-like, optional
        Instead, a self-contained folder for every user to share: ``out/store`` (the sample ingested)
        and the pipeline's results beside it, which ``LatentData.open(out)`` and the app
        (``LATENTSKY_APP_DATA=out``) open without writing anything.
    progress : callable, optional
        Progress callback handed to :func:`latentsky.pipeline.run_pipeline`.
    train : dict, optional
        Training settings handed to :func:`latentsky.pipeline.run_pipeline` (default: the pipeline's).

    Returns
    -------
    Path
        The folder holding ``latent.parquet``, ``model.keras``, ``metrics.json``, ``map.png`` and every
        row's decoded readout (``decoded_readouts.npz``: the app then needs no TensorFlow).
    """
    from latentsky.config import conf
    from latentsky.data import sample_store
    from latentsky.pipeline import run_pipeline

    cache = Path(cache_dir or conf.cache_dir)
    store_path = sample_store(cache).path
    if out is None:
        out = cache / SAMPLE_RESULTS
    out = Path(out)
    metrics = run_pipeline(store_path, out, progress=progress, **({"train": train} if train else {}))
    if out != cache / SAMPLE_RESULTS:
        # the spectra beside the map, so the folder opens on its own (LatentData.open, the app); ingested after
        # the pipeline has made the folder its own (an output folder never holds its run's input)
        from latentsky.data import sample_spectra
        from latentsky.ingest import ingest

        ingest(sample_spectra(), out / "store")
    from latentsky.ui.reconstruct import write_decoded

    write_decoded(out)  # every row's reconstruction, so the app opens them without TensorFlow
    log.info("sample results in %s (up to date, skipped: %s)", out, ", ".join(metrics.get("skipped", [])) or "none")
    return out


def is_prepared(folder: Path) -> bool:
    """True when ``folder`` holds prepared results: the pipeline's last outputs (the map and its picture)."""
    return (Path(folder) / "latent.parquet").is_file() and (Path(folder) / "map.png").is_file()


def prepare_and_say(out: Path | None = None) -> Path:
    """:func:`prepare_sample_results`, first saying how long it takes when the results are not there yet."""
    from latentsky.config import conf

    if not is_prepared(out or Path(conf.cache_dir) / SAMPLE_RESULTS):
        print(f"preparing the sample's results, once: about {PREPARE_MINUTES} minutes on 2 cores", flush=True)
    return prepare_sample_results(out=out)


def sample_results() -> Path:
    """The sample's pipeline results the course reads: the shared ones (``$LATENTSKY_APP_DATA``) when set
    and prepared, else those in the cache, prepared now when missing (once; minutes)."""
    from latentsky.config import conf

    shared = os.environ.get(APP_DATA_ENV)
    if shared and (Path(shared) / "latent.parquet").is_file():
        return Path(shared)
    cached = Path(conf.cache_dir) / SAMPLE_RESULTS
    if is_prepared(cached):  # (re-checking them with the pipeline would load TensorFlow: seconds and 600 MB)
        return cached
    return prepare_sample_results()


def course_map(results: Path | None = None):
    """The sample's autoencoder map as a :class:`~latentsky.ui.data.LatentData`, joined to the spectra's
    catalog (instrument, wavelength range, class, redshift...), from :func:`sample_results`."""
    from latentsky.data import sample_store
    from latentsky.ui.data import LatentData

    results = Path(results or sample_results())
    if (results / "store" / "catalog.parquet").exists():
        return LatentData.from_pipeline(results)
    return LatentData.from_pipeline(results, store=sample_store())


def lab_command(notebooks: Path, port: int) -> list[str]:
    """The JupyterLab command line of the classroom (on 127.0.0.1, opening ``notebooks``)."""
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={notebooks}",
        f"--ServerApp.port={port}",
        "--ServerApp.ip=127.0.0.1",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # a classroom container often runs as root
        cmd.append("--allow-root")
    return cmd


def classroom_environment(archive_urls: dict[str, str]) -> dict[str, str]:
    """``LATENTSKY_*`` variables that point every client at the local archive and forbid other hosts."""
    env = {f"LATENTSKY_{name.upper()}": url for name, url in archive_urls.items()}
    env["LATENTSKY_OFFLINE"] = "1"
    return env


def run(args) -> int:
    """Prepare, start the archive, then JupyterLab (or wait, with ``--no-lab``); returns the exit status."""
    from latentsky.archives.local.archive import LocalArchive
    from latentsky.data import sample_path
    from latentsky.exceptions import LatentskyError

    if args.out is not None and not args.prepare_only:
        raise LatentskyError("classroom: --out goes with --prepare-only")
    if args.hub:
        from latentsky.classroom_hub import run_hub

        return run_hub(args)
    if not args.no_prepare:
        print(f"sample results: {prepare_and_say(args.out)}", flush=True)
    if args.prepare_only:
        return 0
    root = args.root or sample_path()
    if not Path(root).is_dir():
        raise LatentskyError(f"classroom: --root {root} is not a folder")
    notebooks = args.notebooks or (Path("notebooks") if Path("notebooks").is_dir() else Path("."))
    if not notebooks.is_dir():
        raise LatentskyError(f"classroom: --notebooks {notebooks} is not a folder")

    # SIGTERM (a service manager, a closed terminal) stops the archive and JupyterLab like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    archive = LocalArchive(root, host=args.host, port=args.port).start()
    try:
        env = classroom_environment(archive.urls())
        cmd = lab_command(notebooks.resolve(), args.lab_port)
        cat = archive.catalog
        print(
            f"latentsky classroom archive: {archive.base_url} ({len(cat.obscore)} ESO spectra, "
            f"{len(cat.specobj)} SDSS spectra, {len(cat.images)} images from {archive.root})"
        )
        for name, value in env.items():
            print(f"  export {name}={value}")
        print("JupyterLab: " + " ".join(cmd), flush=True)
        if args.no_lab:
            try:
                _sleep_forever()
            except KeyboardInterrupt:
                pass
            return 0
        lab = subprocess.Popen(cmd, env={**os.environ, **env})
        try:
            return lab.wait()
        except KeyboardInterrupt:
            lab.terminate()
            return lab.wait(30)
    finally:
        archive.stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _sleep_forever() -> None:
    """Block the main thread (the archive serves in its own) until Ctrl-C or a signal ends the process."""
    import threading

    threading.Event().wait()
