"""``latentsky classroom --hub``: the course for a room, from a small JupyterHub on the teacher's machine.

One command starts everything a room of students needs, on this machine:

- the sample's results prepared once (or ``--results``), shared read-only by every student
  (``LATENTSKY_APP_DATA``: the app and notebook 06 open them; nobody trains at the start of class);
- the local archive over the sample on 127.0.0.1 (every student's kernel runs here, so loopback reaches it);
- JupyterHub (PyPI ``jupyterhub``, with Node's ``configurable-http-proxy``) on ``--host``/``--hub-port``, with
  the project's ``binder/jupyterhub/jupyterhub_config.py`` loaded when this is a checkout of the repository,
  then a shared-password login (students pick any name), one JupyterLab per student as a process of this
  account in a home of its own under the cache (``SimpleLocalProcessSpawner``), the course copied into each
  home at the first start, at most ``--users`` servers at once, one thread per numerical library.

Ctrl-C stops the hub, the students' servers and the archive.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from latentsky.ui.serve import free_port

log = logging.getLogger(__name__)

#: The project's JupyterHub configuration, in a checkout of the repository (not in an installed package).
PROJECT_HUB_CONFIG = Path(__file__).resolve().parents[2] / "binder" / "jupyterhub" / "jupyterhub_config.py"
#: Environment variable holding the students' shared password (else one is made and printed).
PASSWORD_ENV = "LATENTSKY_CLASSROOM_PASSWORD"
#: Per-student thread limits: thirty kernels share the teacher's cores.
THREAD_LIMITS = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}


def copy_course(source: Path, home: Path, folder: str = "notebooks") -> list[Path]:
    """Copy every file of ``source`` that ``home/folder`` lacks; never replace one it has (a student's edit).

    Returns the files copied.  The same rule as binder/start's on a hub.
    """
    source, dest = Path(source), Path(home) / folder
    copied = []
    for path in sorted(source.rglob("*")):
        if not path.is_file() or ".ipynb_checkpoints" in path.parts:
            continue
        target = dest / path.relative_to(source)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(target)
    return copied


def hub_config(
    run_dir: Path, *, host: str, port: int, users: int, password: str, environment: dict[str, str], notebooks: Path
) -> str:
    """The text of the classroom's ``jupyterhub_config.py`` (written into ``run_dir``)."""
    bin_dir = Path(sys.executable).parent
    project = (
        f"os.environ.setdefault('LATENTSKY_ENV', {sys.prefix!r})\n"
        f"load_subconfig({str(PROJECT_HUB_CONFIG)!r})  # the project's settings, then this room's\n"
        if PROJECT_HUB_CONFIG.exists()
        else "# (the project's jupyterhub_config.py: not in this installation)\n"
    )
    root_args = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return f"""# Written by `latentsky classroom --hub`: a room of students on this machine.
import os
from pathlib import Path

c = get_config()  # noqa: F821
{project}
c.JupyterHub.ip = {host!r}
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {free_port()}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
c.ConfigurableHTTPProxy.command = [{shutil.which("configurable-http-proxy")!r}]
c.JupyterHub.db_url = "sqlite:///{run_dir / "hub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(run_dir / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(run_dir / "hub.pid")!r}
c.JupyterHub.cleanup_servers = True

# Students pick a name and type the room's password.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {password!r}
c.Authenticator.allow_all = True
c.Authenticator.enable_auth_state = False

# One JupyterLab per student: a process of this account, in a home of its own.
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(run_dir / "homes" / "{username}")!r}
c.Spawner.cmd = [{str(bin_dir / "jupyterhub-singleuser")!r}]
c.Spawner.args = {root_args!r}
c.Spawner.default_url = "/lab/tree/notebooks/00_quickstart.ipynb"
c.JupyterHub.active_server_limit = {users}
c.Spawner.start_timeout = 600   # thirty servers starting at once on a laptop
c.Spawner.http_timeout = 600
c.Spawner.environment = {{
    **{environment!r},
    "XDG_CACHE_HOME": lambda spawner: str(Path(spawner.home_dir) / ".cache"),
    "PATH": {str(bin_dir)!r} + os.pathsep + os.environ.get("PATH", ""),
}}


def copy_the_course(spawner):
    from latentsky.classroom_hub import copy_course

    copy_course(Path({str(notebooks)!r}), Path(spawner.home_dir))


c.Spawner.pre_spawn_hook = copy_the_course
"""


def run_hub(args) -> int:
    """Prepare the shared results, start the archive and the hub; serve until Ctrl-C. Returns the exit status."""
    from latentsky.archives.local.archive import LocalArchive
    from latentsky.commands.classroom import (
        APP_DATA_ENV,
        _interrupt,
        classroom_environment,
        prepare_and_say,
    )
    from latentsky.config import conf
    from latentsky.data import sample_path
    from latentsky.exceptions import LatentskyError

    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        raise LatentskyError("classroom --hub: JupyterHub is not installed (pip install jupyterhub)") from None
    if shutil.which("configurable-http-proxy") is None:
        raise LatentskyError(
            "classroom --hub: configurable-http-proxy is not on PATH "
            "(npm install -g configurable-http-proxy; `make sysdeps` does it on Debian/Ubuntu)"
        )
    if args.users < 1:
        raise LatentskyError(f"classroom --hub: --users {args.users}: at least one student")
    notebooks = args.notebooks or (Path("notebooks") if Path("notebooks").is_dir() else None)
    if notebooks is None or not Path(notebooks).is_dir():
        raise LatentskyError("classroom --hub: no course folder (--notebooks DIR; default ./notebooks)")
    password = args.password or os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(9)
    if len(password) < 8:
        raise LatentskyError("classroom --hub: the password needs at least 8 characters")

    results = args.results
    if results is None:
        results = Path(conf.cache_dir) / "classroom-results"
        if not args.no_prepare:
            prepare_and_say(results)
    if not (Path(results) / "latent.parquet").is_file():
        raise LatentskyError(
            f"classroom --hub: {results} holds no prepared results (latent.parquet); "
            f"run `latentsky classroom --prepare-only --out {results}`"
        )

    run_dir = Path(conf.cache_dir) / "classroom-hub"
    (run_dir / "homes").mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager or a closed terminal: stop like Ctrl-C
    # every student's kernel runs on this machine: the archive stays on the loopback interface
    archive = LocalArchive(args.root or sample_path(), host="127.0.0.1", port=args.port).start()
    hub = None
    try:
        environment = {
            **classroom_environment(archive.urls()),
            APP_DATA_ENV: str(Path(results).resolve()),
            **THREAD_LIMITS,
        }
        config = run_dir / "jupyterhub_config.py"
        config.write_text(
            hub_config(
                run_dir,
                host=args.host,
                port=args.hub_port,
                users=args.users,
                password=password,
                environment=environment,
                notebooks=Path(notebooks).resolve(),
            )
        )
        shown = "127.0.0.1" if args.host in ("", "0.0.0.0") else args.host
        print(
            f"latentsky classroom hub: http://{shown}:{args.hub_port}/ (on {args.host}), at most {args.users} "
            f"students; they log in with any name and the password {password}",
            flush=True,
        )
        print(f"  shared results: {results}; archive: {archive.base_url}; homes: {run_dir / 'homes'}", flush=True)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        with open(run_dir / "hub.log", "ab") as hub_log:
            hub = subprocess.Popen(
                [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config)],
                cwd=run_dir,
                env=env,
                stdout=hub_log,
                stderr=subprocess.STDOUT,
            )
        print(f"  JupyterHub's log: {run_dir / 'hub.log'}", flush=True)
        try:
            return hub.wait()
        except KeyboardInterrupt:
            hub.terminate()
            try:
                return hub.wait(60)  # it stops the students' servers first
            except subprocess.TimeoutExpired:
                hub.kill()
                return 1
    finally:
        archive.stop()
