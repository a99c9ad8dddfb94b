"""JupyterHub configuration for latentsky on a shared science platform (one machine, local users).

Copy it next to your hub, adjust the marked paths, and start ``jupyterhub -f jupyterhub_config.py``.  On
Kubernetes use ``config.yaml`` (Zero to JupyterHub) instead: it carries the same settings.
What it sets, and why: see README.md beside this file.
"""

import os

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

# --- who logs in and how servers start --------------------------------------------------------------
# Your site's authenticator goes here (OAuthenticator, LDAPAuthenticator...); PAM is JupyterHub's default.
# c.JupyterHub.authenticator_class = "generic-oauth"
c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"  # or systemdspawner, batchspawner...
c.Spawner.default_url = "/lab"
# The app's first start imports TensorFlow-free code, compiles Datashader and loads the sample: allow time.
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

# --- the same environment as Binder -----------------------------------------------------------------
# The single-user servers run in the latentsky environment (binder/environment.yml + `pip install .`), so
# jupyter-server-proxy finds the "latentsky explorer" launcher entry by itself (no hub-side setting).
LATENTSKY_ENV = os.environ.get("LATENTSKY_ENV", "/opt/latentsky")  # <- adjust: the environment's prefix
c.Spawner.cmd = [os.path.join(LATENTSKY_ENV, "bin", "jupyterhub-singleuser")]

# --- shared read-only data, per-user caches and manifests ------------------------------------------
SHARED = "/srv/latentsky"  # <- adjust: read-only for users
# Per user: downloads, their SQLite manifest, stores and the app's work folder live under the user's
# ~/.cache/latentsky (conf.cache_dir; the spawner sets HOME and does not pass the hub's XDG_CACHE_HOME on),
# never in the shared tree, so two users never write one manifest.
c.Spawner.environment = {
    # Shared: the data set everyone reads (ingest it into your own store: `latentsky ingest SHARED/... --out ~/store`)
    "LATENTSKY_SHARED_DATA": f"{SHARED}/data",
    # What the app and the course open first: the sample's results prepared once by the platform team
    # (`latentsky classroom --prepare-only --out /srv/latentsky/results/sample`), read-only for users.
    "LATENTSKY_APP_DATA": f"{SHARED}/results/sample",
    # One kernel must not take every core of a shared node.
    "OMP_NUM_THREADS": "2",
    "OPENBLAS_NUM_THREADS": "2",
    "NUMBA_NUM_THREADS": "2",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}
# Heavy steps (embedding a large store) go to Dask: see README.md (Dask Gateway or dask-jobqueue).
if os.environ.get("DASK_GATEWAY_ADDRESS"):
    c.Spawner.environment["DASK_GATEWAY__ADDRESS"] = os.environ["DASK_GATEWAY_ADDRESS"]

# --- ESO credentials, per user, never in a notebook --------------------------------------------------
# latentsky reads the token from LATENTSKY_ESO_TOKEN, else from the keyring (service "latentsky", user "eso").
# When the site's login provides an ESO token (an OAuth login at ESO, or a token your identity system
# stores), pass it into this user's server only, from the authenticator's encrypted auth state:
c.Authenticator.enable_auth_state = bool(os.environ.get("JUPYTERHUB_CRYPT_KEY"))


async def pass_eso_token(spawner):
    """Give the user's own ESO token (if the authenticator stored one) to their server only."""
    auth_state = await spawner.user.get_auth_state() or {}
    token = auth_state.get("eso_token")
    if token:
        # A new dict for this spawner: the configured one is shared by every user's spawner.
        spawner.environment = {**spawner.environment, "LATENTSKY_ESO_TOKEN": token}


c.Spawner.pre_spawn_hook = pass_eso_token
