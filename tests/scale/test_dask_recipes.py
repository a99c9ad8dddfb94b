"""The dask-jobqueue and Dask Gateway recipes of binder/jupyterhub/dask/ load, build clusters, and run latentsky.

No HPC centre and no Kubernetes here, so: the jobqueue configuration builds
real SLURM and PBS job scripts, and a stand-in for ``sbatch``/``scancel``
runs the SLURM job script on this machine (the workers it starts are real);
the gateway configuration builds a real ``dask_gateway.Gateway``, and a real
dask-gateway server (local back end, running the option handler of
``daskhub-values.yaml``) starts the cluster latentsky runs on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from latentsky.distributed import dask_client, make_cluster
from latentsky.embed.layout import open_embeddings
from latentsky.embed.runner import embed_store
from latentsky.exceptions import LatentskyError
from latentsky.ui.serve import free_port

RECIPES = Path(__file__).resolve().parents[2] / "binder" / "jupyterhub" / "dask"
ARRAYS = ("readout", "gram", "xty", "yty", "n_steps")


def recipe(name: str) -> dict:
    """Dask's configuration with a file of the recipe merged in, as Dask merges the files it finds."""
    import dask.config
    import dask_gateway  # noqa: F401  (both packages add their defaults to dask.config on import)
    import dask_jobqueue  # noqa: F401

    return dask.config.merge(dask.config.config, dask.config.collect(paths=[str(RECIPES / name)], env={}))


def assert_same_embeddings(a, b) -> None:
    ea, eb = open_embeddings(a), open_embeddings(b)
    for k in ARRAYS:
        x, y = getattr(ea, k)[:], getattr(eb, k)[:]
        assert np.array_equal(x, y), f"{k}: differs by up to {np.max(np.abs(x - y)):.3g}"


@pytest.fixture(scope="module")
def single(sample_store, tmp_path_factory):
    """The sample embedded in this process: what every cluster must reproduce."""
    return embed_store(
        sample_store, tmp_path_factory.mktemp("single") / "emb", n_units=10, backend="numpy", chunk_rows=32
    )


def test_jobqueue_recipe_builds_slurm_and_pbs_job_scripts():
    import dask.config

    config = recipe("jobqueue.yaml")
    with dask.config.set(config):
        with make_cluster(
            "slurm",
            python="/opt/latentsky/bin/python",
            account="astro-123",
            scheduler_options={"dashboard_address": None},
        ) as cluster:
            script = cluster.job_script()
        with make_cluster("pbs", scheduler_options={"dashboard_address": None}) as cluster:
            pbs = cluster.job_script()
    assert "#SBATCH -J latentsky-worker" in script and "#SBATCH --cpus-per-task=8" in script
    assert "#SBATCH -t 02:00:00" in script and "#SBATCH -A astro-123" in script
    assert "#SBATCH --output=latentsky-worker-%j.log" in script
    assert "export OMP_NUM_THREADS=1" in script
    # one single-threaded worker process per core
    assert "/opt/latentsky/bin/python -m distributed.cli.dask_worker" in script
    assert "--nthreads 1" in script and "--nworkers 8" in script and "--local-directory ${TMPDIR:-/tmp}" in script
    assert "#PBS -l select=1:ncpus=8:mem=32GB" in pbs and "#PBS -l walltime=02:00:00" in pbs
    assert "--nworkers 8" in pbs


def test_jobqueue_recipe_runs_latentsky_through_a_batch_system_stand_in(sample_store, single, tmp_path, monkeypatch):
    import dask.config

    bin_dir, jobs = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    # sbatch: run the job script here, detached, in its own process group; scancel: end that group
    (bin_dir / "sbatch").write_text(
        textwrap.dedent(f"""\
        #!/bin/bash
        id=$((4000 + $(ls {jobs} | wc -l)))
        cp "${{@: -1}}" {jobs}/$id.sh          # dask-jobqueue removes its temporary script once submitted
        setsid bash {jobs}/$id.sh > {jobs}/$id.log 2>&1 < /dev/null &
        echo $! > {jobs}/$id.pid
        echo "Submitted batch job $id"
        """)
    )
    (bin_dir / "scancel").write_text(f"#!/bin/bash\nfor id; do kill -- -$(cat {jobs}/$id.pid) 2>/dev/null; done\n")
    for tool in ("sbatch", "scancel"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = recipe("jobqueue.yaml")
    # a job of 2 cores on this 2-core machine; the recipe's everything else
    overrides = {
        "jobqueue.slurm.cores": 2,
        "jobqueue.slurm.processes": 2,
        "jobqueue.slurm.memory": "2GiB",
        "jobqueue.slurm.scheduler-options": {"dashboard_address": None},
    }
    with dask.config.set(config), dask.config.set(overrides):
        out = embed_store(
            sample_store, tmp_path / "emb", n_units=10, backend="numpy", chunk_rows=32, cluster="slurm", workers=2
        )
    assert_same_embeddings(single, out)
    assert sorted(p.name for p in jobs.iterdir())[:3] == ["4000.log", "4000.pid", "4000.sh"]
    assert "--nworkers 2" in (jobs / "4000.sh").read_text()
    with pytest.raises(LatentskyError, match="workers"):
        with dask_client(cluster="slurm"):
            pass


def test_gateway_recipe_builds_the_hubs_gateway(monkeypatch):
    import dask.config
    from dask_gateway import Gateway
    from dask_gateway.auth import JupyterHubAuth

    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "not-a-real-token")
    monkeypatch.setenv("JUPYTER_IMAGE_SPEC", "registry.example/latentsky:2026.12")
    with dask.config.set(recipe("gateway.yaml")):
        gateway = Gateway()
        options = gateway._config_cluster_options()
    assert gateway.address == "http://proxy-public/services/dask-gateway"
    assert gateway._public_address == "https://HUB/services/dask-gateway"
    assert isinstance(gateway.auth, JupyterHubAuth) and gateway.auth.api_token == "not-a-real-token"
    assert options["image"] == "registry.example/latentsky:2026.12"
    assert options["worker_cores"] == 1 and options["environment"]["OMP_NUM_THREADS"] == "1"
    gateway.close()


@pytest.fixture()
def local_gateway(tmp_path):
    """A real dask-gateway server on 127.0.0.1 (local back end) with the option handler of daskhub-values.yaml."""
    pytest.importorskip("dask_gateway_server")
    api, proxy = free_port(), free_port()
    values = yaml.safe_load((RECIPES / "daskhub-values.yaml").read_text())
    handler = values["dask-gateway"]["gateway"]["extraConfig"]["latentsky-options"]
    config = tmp_path / "gateway_config.py"
    config.write_text(
        textwrap.dedent(f"""\
        c.DaskGateway.address = "127.0.0.1:{api}"
        c.Proxy.address = "127.0.0.1:{proxy}"
        c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
        c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
        c.LocalBackend.clusters_directory = "{tmp_path / "clusters"}"
        c.LocalClusterConfig.scheduler_cmd = ["{sys.executable}", "-m", "distributed.cli.dask_scheduler"]
        c.LocalClusterConfig.worker_cmd = ["{sys.executable}", "-m", "distributed.cli.dask_worker"]
        """)
        + handler
    )
    log = open(tmp_path / "gateway.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "dask_gateway_server", "-f", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    while b"Dask-Gateway server started" not in (tmp_path / "gateway.log").read_bytes():
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the gateway server did not start:\n" + (tmp_path / "gateway.log").read_text()[-3000:])
        time.sleep(0.2)
    yield {
        "gateway.address": f"http://127.0.0.1:{api}",
        "gateway.proxy-address": f"gateway://127.0.0.1:{proxy}",
        "gateway.public-address": None,
        "gateway.auth": {"type": "basic", "kwargs": {}},
    }
    server.terminate()  # a graceful stop: the server also ends the scheduler processes it started
    server.wait(60)
    log.close()


def test_gateway_recipe_runs_latentsky_on_a_real_gateway(sample_store, single, local_gateway, tmp_path, monkeypatch):
    import dask.config

    monkeypatch.setenv("JUPYTER_IMAGE_SPEC", "registry.example/latentsky:2026.12")
    config = recipe("gateway.yaml")
    # The local back end starts workers in a clean environment. Bitwise equality needs the kernels this
    # process uses (OpenBLAS and numba pick them by CPU, or by these variables where a site sets them,
    # e.g. bench/_cpu.py's forced AVX2); otherwise the ridge solutions differ in the 12th digit.
    for name in ("OPENBLAS_CORETYPE", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NPY_DISABLE_CPU_FEATURES"):
        if name in os.environ:
            config["gateway"]["cluster"]["options"]["environment"][name] = os.environ[name]
    # the recipe's client settings, pointed at the local server instead of the hub's
    with dask.config.set(config), dask.config.set(local_gateway), dask_client(cluster="gateway", workers=2) as client:
        client.wait_for_workers(2, timeout=120)
        # the server applied the recipe's options: one thread and 4 GiB per worker, its environment
        workers = client.scheduler_info()["workers"].values()
        assert [w["nthreads"] for w in workers] == [1, 1]
        assert {w["memory_limit"] for w in workers} == {4 * 2**30}
        assert set(client.run(os.getenv, "TF_CPP_MIN_LOG_LEVEL").values()) == {"3"}
        out = embed_store(sample_store, tmp_path / "emb", n_units=10, backend="numpy", chunk_rows=32, client=client)
    assert_same_embeddings(single, out)
