"""A real JupyterHub on 127.0.0.1: log in, spawn a single-user server, reach the latentsky app through the proxy.

The hub (PyPI ``jupyterhub``) runs with the dummy authenticator and the simple
local-process spawner, behind configurable-http-proxy (npm, installed by
``make sysdeps``).  The single-user server is ``jupyterhub-singleuser`` of this
environment, so jupyter-server-proxy finds latentsky's entry point exactly as
on a platform's image.  The path tested is the user's: browser -> CHP -> hub
login -> single-user server -> jupyter-server-proxy -> ``latentsky.jupyter_proxy``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest

from latentsky.ui.serve import free_port

requests = pytest.importorskip("requests")
pytest.importorskip("jupyterhub")
pytest.importorskip("jupyter_server_proxy")

pytestmark = pytest.mark.slow

USER, PASSWORD = "ada", "classroom"
BIN = Path(sys.executable).parent


def _wait(predicate, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (requests.RequestException, OSError) as err:
            last = err
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last})")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A running JupyterHub; yields its public URL and the log file."""
    if shutil.which("configurable-http-proxy") is None:
        pytest.skip("configurable-http-proxy (npm) is not installed; `make sysdeps` installs it")
    if not (BIN / "jupyterhub-singleuser").exists():
        pytest.skip("jupyterhub-singleuser is not in this environment")
    tmp = tmp_path_factory.mktemp("hub")
    port, hub_port, api_port = free_port(), free_port(), free_port()
    homes = tmp / "home"
    homes.mkdir()
    config = tmp / "jupyterhub_config.py"
    config.write_text(f"""
from pathlib import Path

c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{shutil.which("configurable-http-proxy")!r}]
c.JupyterHub.db_url = "sqlite:///{tmp / "hub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(tmp / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(tmp / "hub.pid")!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(homes / "{username}")!r}
c.Spawner.cmd = [{str(BIN / "jupyterhub-singleuser")!r}]
c.Spawner.default_url = "/lab"
c.Spawner.args = {["--allow-root"] if os.getuid() == 0 else []!r}  # containers run tests as root
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
# Per-user cache (the sample store, the app's work folder) in the user's home, as on a platform.
c.Spawner.environment = {{"XDG_CACHE_HOME": lambda spawner: str(Path(spawner.home_dir) / ".cache"),
                          "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
                          "LATENTSKY_OFFLINE": "1"}}
""")
    log_path = tmp / "hub.log"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "jupyterhub"), "-f", str(config)], cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    started: list = []
    try:
        _wait(lambda: proc.poll() is None and requests.get(url + "/hub/api/", timeout=2).ok, 60, "the hub")
        yield {"url": url, "log": log_path, "proc": proc, "started": started}
    finally:
        import psutil

        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        # The hub stops the single-user servers it spawned; anything it left behind is ours to end, by pid.
        for child in children:
            try:
                child.terminate()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(children, timeout=10)


def _hub_log(hub) -> str:
    return Path(hub["log"]).read_text(errors="replace")[-4000:]


def test_login_spawn_and_reach_the_app_through_the_proxy(hub):
    url = hub["url"]
    s = requests.Session()
    t0 = time.monotonic()

    # Log in through the form, as a browser would (the hub checks its _xsrf cookie).
    s.get(f"{url}/hub/login", timeout=10).raise_for_status()
    xsrf = s.cookies.get("_xsrf")
    r = s.post(f"{url}/hub/login", data={"username": USER, "password": PASSWORD, "_xsrf": xsrf}, timeout=60)
    assert r.ok, _hub_log(hub)
    assert s.cookies.get("jupyterhub-session-id"), "no hub session after logging in"

    # Spawn the single-user server (the spawn page starts it) and wait until it answers through the proxy.
    s.get(f"{url}/hub/spawn/{USER}", timeout=60)

    def servers_info():
        # While the server starts, the hub answers with its spawn-pending page; once up, the single-user
        # server answers (after the OAuth round trip the session follows) with JSON.
        r = s.get(f"{url}/user/{USER}/server-proxy/servers-info", timeout=10)
        return r if r.ok and r.headers.get("content-type", "").startswith("application/json") else None

    # jupyter-server-proxy knows the app and offers it in the launcher.
    r = _wait(servers_info, 90, "the single-user server", step=1)
    servers = {srv["name"]: srv for srv in r.json()["server_processes"]}
    assert "latentsky" in servers, servers
    assert servers["latentsky"]["launcher_entry"]["title"] == "latentsky explorer"

    # The app itself, through CHP -> single-user server -> jupyter-server-proxy (started on this request).
    r = s.get(f"{url}/user/{USER}/latentsky/", timeout=150)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}\n{_hub_log(hub)}"
    page = r.text
    assert "<title>latentsky explorer</title>" in page
    # Every script of the page resolves under the proxied prefix, so it loads behind the hub.
    scripts = [urljoin(r.url, src) for src in re.findall(r'<script[^>]+src="([^"]+)"', page)]
    assert scripts and all(src.startswith(f"{url}/user/{USER}/latentsky/") for src in scripts), scripts
    bokeh_js = next(src for src in scripts if "bokeh.min.js" in src)
    js = s.get(bokeh_js, timeout=30)
    assert js.status_code == 200 and len(js.content) > 100_000, (js.status_code, len(js.content))

    # The app's Bokeh websocket through the proxy: the server answers with its first message.
    token = re.search(r'"token":\s*"([^"]+)"', page)
    assert token, "no Bokeh session token in the page"
    _check_websocket(
        f"ws://127.0.0.1:{url.rsplit(':', 1)[1]}/user/{USER}/latentsky/ws",
        token.group(1),
        cookies="; ".join(f"{c.name}={c.value}" for c in s.cookies),
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 120, f"login to app took {elapsed:.0f} s"


def _check_websocket(ws_url: str, token: str, cookies: str) -> None:
    import asyncio

    from tornado import httpclient, websocket

    async def talk():
        request = httpclient.HTTPRequest(ws_url, headers={"Cookie": cookies}, request_timeout=60)
        conn = await websocket.websocket_connect(request, subprotocols=["bokeh", token])
        try:
            header = await conn.read_message()
            assert header is not None, "the websocket closed without a message"
            assert json.loads(header)["msgtype"] == "ACK", header
        finally:
            conn.close()

    asyncio.run(asyncio.wait_for(talk(), 90))


DEPLOY = Path(__file__).resolve().parents[2] / "binder" / "jupyterhub"


def test_deployment_config_loads_and_passes_the_eso_token_to_one_user_only():
    """binder/jupyterhub/jupyterhub_config.py runs as JupyterHub runs it, and its hook gives each user their own
    token."""
    import asyncio

    from traitlets.config import Config

    config = Config()
    path = DEPLOY / "jupyterhub_config.py"
    exec(compile(path.read_text(), str(path), "exec"), {"get_config": lambda: config, "__file__": str(path)})
    assert config.Spawner.cmd[0].endswith("jupyterhub-singleuser")
    shared_env = config.Spawner.environment
    assert "LATENTSKY_APP_DATA" in shared_env and "LATENTSKY_ESO_TOKEN" not in shared_env

    class User:
        def __init__(self, state):
            self.state = state

        async def get_auth_state(self):
            return self.state

    class Spawner:
        def __init__(self, state):
            self.user, self.environment = User(state), shared_env

    ada, bob = Spawner({"eso_token": "ada-secret"}), Spawner(None)
    asyncio.run(config.Spawner.pre_spawn_hook(ada))
    asyncio.run(config.Spawner.pre_spawn_hook(bob))
    assert ada.environment["LATENTSKY_ESO_TOKEN"] == "ada-secret"
    assert "LATENTSKY_ESO_TOKEN" not in bob.environment and "LATENTSKY_ESO_TOKEN" not in shared_env


def test_helm_values_carry_the_same_settings():
    import yaml

    values = yaml.safe_load((DEPLOY / "config.yaml").read_text())
    single = values["singleuser"]
    assert single["defaultUrl"].startswith("/lab")
    # the prepared results are the image's (binder/start); the shared data set is the platform's
    assert "LATENTSKY_SHARED_DATA" in single["extraEnv"]
    assert all(m["readOnly"] for m in single["storage"]["extraVolumeMounts"])
    assert "LATENTSKY_ESO_TOKEN" in values["hub"]["extraConfig"]["latentsky-eso-token"]
    assert "TOKEN" not in json.dumps(single).upper().replace("LATENTSKY_ESO_TOKEN", "")
