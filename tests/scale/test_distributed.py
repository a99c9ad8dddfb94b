"""latentsky.distributed: results in task order with a bounded number in flight, clients from what was given."""

from __future__ import annotations

import threading
import time

import pytest

from latentsky.distributed import dask_client, make_cluster, map_ordered
from latentsky.exceptions import LatentskyError

STARTED: list[int] = []
LOCK = threading.Lock()


def slow_square(i: int, *, delays: dict) -> int:
    with LOCK:
        STARTED.append(i)
    time.sleep(delays.get(i, 0.0))
    if i == 13:
        raise ValueError("task 13 is unlucky")
    return i * i


@pytest.fixture(scope="module")
def threads_client():
    from distributed import Client, LocalCluster

    # threads in this process: the tasks can record what ran in STARTED
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_results_come_in_task_order_with_few_in_flight(threads_client):
    STARTED.clear()
    delays = {0: 0.3, 1: 0.2}  # the first tasks finish last
    results = map_ordered(
        slow_square, [(i,) for i in range(12)], client=threads_client, common={"delays": delays}, window=3
    )
    assert next(results) == 0
    time.sleep(0.5)  # a slow consumer: no more than the window may run ahead
    assert len(STARTED) <= 4
    assert list(results) == [i * i for i in range(1, 12)]
    assert sorted(STARTED) == list(range(12))
    # in this process: the same results, one after the other
    assert list(map_ordered(slow_square, [(i,) for i in range(12)], common={"delays": {}})) == [
        i * i for i in range(12)
    ]


def test_a_failing_task_raises_and_the_rest_are_cancelled(threads_client):
    STARTED.clear()
    results = map_ordered(
        slow_square, [(i,) for i in range(10, 40)], client=threads_client, common={"delays": {}}, window=4
    )
    with pytest.raises(ValueError, match="task 13"):
        list(results)
    time.sleep(0.3)
    assert max(STARTED) < 10 + 3 + 4 + 2  # nothing submitted beyond the window after the failure
    assert list(map_ordered(slow_square, [], client=threads_client, common={"delays": {}})) == []


def test_clients_from_what_was_given(threads_client):
    with dask_client() as none:
        assert none is None
    with dask_client(threads_client) as same:
        assert same is threads_client
    with dask_client(scheduler=threads_client.scheduler.address) as other:
        assert other is not threads_client and other.submit(sum, [1, 2]).result() == 3
    for bad, match in [
        ({"workers": 0}, "workers=0"),
        ({"workers": 2, "scheduler": "tcp://x:1"}, "at most one"),
        ({"cluster": "slurm"}, "number of workers"),
        ({"cluster": "kubernetes", "workers": 1}, "cluster='kubernetes'"),
    ]:
        with pytest.raises(LatentskyError, match=match):
            with dask_client(**bad):
                pass
    with pytest.raises(LatentskyError, match="cluster='yarn'"):
        make_cluster("yarn")
