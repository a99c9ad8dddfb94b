"""Dask plumbing shared by the heavy steps (ingest, embed, encode, synthetic stores).

Every heavy step cuts its work into chunks of rows and computes each with one
pure function, either in this process or on a Dask cluster.  This module holds
the two pieces they share:

* :func:`dask_client`: the client to use, from what the caller gave: a
  ``distributed.Client``, a scheduler address, a number of local workers, or a
  cluster kind configured in Dask's configuration (dask-jobqueue's
  ``jobqueue.slurm`` and friends, dask-gateway's ``gateway``; see
  ``binder/jupyterhub/dask/``);
* :func:`map_ordered`: apply a chunk function to a list of tasks and yield the
  results in task order, keeping only a few tasks in flight so that memory
  stays bounded however many chunks there are.

Results are yielded in task order whatever the cluster, so the caller writes
its output in the same order as a single-process run; the chunk functions are
deterministic, so the output is identical.  ``dask`` and ``distributed`` are
imported only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import deque
from typing import Callable, Iterable, Iterator

from latentsky.exceptions import LatentskyError

log = logging.getLogger(__name__)

#: Cluster kinds :func:`make_cluster` builds from Dask's configuration.
JOBQUEUE_KINDS = ("slurm", "pbs", "sge", "lsf", "htcondor", "moab", "oar")
CLUSTER_KINDS = ("local", "gateway") + JOBQUEUE_KINDS


def make_cluster(kind: str, n_workers: int | None = None, **kwargs):
    """A Dask cluster object of ``kind``, configured from Dask's configuration.

    Parameters
    ----------
    kind : {"local", "gateway", "slurm", "pbs", "sge", "lsf", "htcondor", "moab", "oar"}
        ``local``: a :class:`distributed.LocalCluster` of single-threaded
        worker processes; ``gateway``: a new cluster of the Dask Gateway named
        by the ``gateway`` configuration (``gateway.address``, ``gateway.auth``);
        the others: a dask-jobqueue cluster whose resources, queue, account and
        Python come from ``jobqueue.<kind>`` (e.g. ``~/.config/dask/jobqueue.yaml``
        or ``$DASK_CONFIG``).
    n_workers : int, optional
        Workers to ask for: local worker processes, or ``scale(n_workers)`` for
        the others (0 or None: none yet; call ``cluster.scale`` yourself).
    **kwargs
        Passed to the cluster class, overriding the configuration.

    Raises
    ------
    LatentskyError
        For an unknown kind, or when the package of that kind is not installed.
    """
    if kind not in CLUSTER_KINDS:
        raise LatentskyError(f"parameter cluster={kind!r}: must be one of {', '.join(CLUSTER_KINDS)}")
    if kind == "local":
        from distributed import LocalCluster

        # One thread per worker process: the NumPy back ends' own threads then see one core
        # each instead of oversubscribing (results do not depend on it).
        kwargs.setdefault("threads_per_worker", 1)
        kwargs.setdefault("dashboard_address", None)
        return LocalCluster(n_workers=int(n_workers or 1), **kwargs)
    if kind == "gateway":
        try:
            from dask_gateway import Gateway
        except ImportError as err:
            raise LatentskyError("parameter cluster='gateway' needs the dask-gateway package") from err
        cluster = Gateway().new_cluster(**kwargs)
    else:
        try:
            import dask_jobqueue
        except ImportError as err:
            raise LatentskyError(f"parameter cluster={kind!r} needs the dask-jobqueue package") from err
        name = {"htcondor": "HTCondorCluster"}.get(kind, kind.upper() + "Cluster")
        cluster = getattr(dask_jobqueue, name)(**kwargs)
    if n_workers:
        cluster.scale(int(n_workers))
    return cluster


@contextlib.contextmanager
def dask_client(
    client=None, *, scheduler: str | None = None, workers: int | None = None, cluster: str | None = None
) -> Iterator:
    """The Dask client to run on, or None for this process alone.

    Parameters
    ----------
    client : distributed.Client, optional
        Used as it is (and left open).
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``) to connect to.
    workers : int, optional
        Number of workers: a local cluster of that many single-threaded worker
        processes, or, with ``cluster``, the workers to ask that cluster for.
    cluster : str, optional
        A kind of :func:`make_cluster` (``local``, ``gateway``, ``slurm``...).

    Yields
    ------
    distributed.Client or None
        Clusters and clients made here are closed on exit.
    """
    if sum(x is not None for x in (client, scheduler, cluster)) > 1 or (
        workers is not None and (client is not None or scheduler is not None)
    ):
        raise LatentskyError("give at most one of client, scheduler, workers (workers may go with cluster)")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise LatentskyError(f"parameter workers={workers!r}: must be a positive integer")
    if cluster is not None and cluster not in CLUSTER_KINDS:
        raise LatentskyError(f"parameter cluster={cluster!r}: must be one of {', '.join(CLUSTER_KINDS)}")
    if cluster not in (None, "local") and workers is None:
        raise LatentskyError(f"parameter workers: give the number of workers to ask the {cluster} cluster for")
    if client is not None:
        yield client
        return
    if scheduler is None and workers is None and cluster is None:
        yield None
        return
    from distributed import Client

    made = None
    if scheduler is not None:
        own = Client(scheduler)
    else:
        made = make_cluster(cluster or "local", workers)
        own = Client(made)
    try:
        yield own
    finally:
        own.close()
        if made is not None:
            made.close()


def n_threads(client) -> int:
    """Worker threads of a client's cluster (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # a cluster still starting answers nothing yet; one thread is a safe guess
        return 1


def map_ordered(
    fn: Callable, tasks: Iterable, *, client=None, common: dict | None = None, window: int | None = None
) -> Iterator:
    """``fn(*task, **common)`` for every task, yielded in task order.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function of one chunk.
    tasks : iterable of tuple
        Positional arguments of each call.
    client : distributed.Client, optional
        Run the calls on its cluster; None: one after the other in this process.
    common : dict, optional
        Keyword arguments shared by every call; on a cluster they are sent to
        the workers once (``Client.scatter``), not with every task.
    window : int, optional
        Tasks in flight at once on a cluster (default: twice the worker
        threads at the time, plus one): results wait for the caller only that
        deep, so memory is bounded by ``window`` chunk results.

    Notes
    -----
    Tasks are submitted with ``pure=False`` (each runs exactly once per
    submission); a task that fails raises its exception here, after the
    remaining in-flight tasks are cancelled.
    """
    common = dict(common or {})
    if client is None:
        for task in tasks:
            yield fn(*task, **common)
        return
    it = iter(tasks)
    first = next(it, None)
    if first is None:  # nothing to do (a resumed run that had finished every chunk): no worker needed
        return
    if not client.scheduler_info().get("workers"):
        # a batch queue or a gateway starts workers after the cluster: wait (as long as the queue takes)
        log.info("waiting for the first Dask worker of %s", client)
        client.wait_for_workers(1)
    # each value whole (scatter would split a list or dict into one future per element)
    shared = {k: client.scatter([v], broadcast=True, hash=False)[0] for k, v in common.items()}
    pending: deque = deque()
    try:
        for task in itertools.chain([first], it):
            pending.append(client.submit(fn, *task, pure=False, **shared))
            # asked again before each wait: batch jobs and gateway workers keep joining after the start
            if len(pending) >= int(window or 2 * n_threads(client) + 1):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        if pending:
            client.cancel(list(pending))
        for fut in shared.values():
            fut.release()


def add_cli_arguments(parser) -> None:
    """The ``--scheduler``, ``--workers`` and ``--cluster`` options of the commands that can run on Dask."""
    group = parser.add_argument_group("Dask (default: this process alone)")
    group.add_argument("--scheduler", metavar="ADDRESS", help="run on the Dask scheduler at this address")
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run on a local Dask cluster of N worker processes (with --cluster: N workers there)",
    )
    group.add_argument(
        "--cluster",
        choices=CLUSTER_KINDS,
        help="start a cluster of this kind from Dask's configuration (dask-jobqueue's "
        "jobqueue.<kind>, dask-gateway's gateway); see binder/jupyterhub/dask/",
    )


def cli_options(args) -> dict:
    """The keyword arguments of :func:`dask_client` given on a command line."""
    return {"scheduler": args.scheduler, "workers": args.workers, "cluster": args.cluster}
