"""Asynchronous TAP queries: the UWS 1.1 job interface of the local archive (``/tap/async``).

A client POSTs a query to ``/tap/async`` and is sent (303) to its job,
``/tap/async/{id}``, whose XML document tells its phase (PENDING, QUEUED,
EXECUTING, COMPLETED, ERROR, ABORTED); ``PHASE=RUN`` starts it (also accepted
with the creating POST), ``PHASE=ABORT`` stops it, ``DELETE`` (or
``ACTION=DELETE``) removes it; ``/results/result`` is the VOTable answer and
``/error`` the error document.  ``GET /tap/async/{id}?WAIT=n`` blocks until the
phase changes, for at most :data:`MAX_WAIT` seconds.  Jobs run in a small pool
of their own threads; at most :data:`MAX_JOBS` are kept, each until its
destruction time (:data:`RETENTION` seconds after creation unless changed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import itertools
import secrets
import threading
import time
from typing import Callable
from xml.sax.saxutils import escape, quoteattr

from latentsky.archives.local.messages import HTTPError, Request, Response
from latentsky.archives.local.server import lower_priority

RETENTION = 86_400
"""Seconds a job is kept after its creation (its default destruction time)."""

MAX_JOBS = 100
"""Jobs kept at most; the oldest finished ones are destroyed first."""

MAX_WAIT = 10.0
"""Longest blocking wait (``WAIT``) in seconds."""

ACTIVE = ("PENDING", "QUEUED", "EXECUTING")
UWS_NS = (
    'xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" xmlns:xlink="http://www.w3.org/1999/xlink" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclasses.dataclass
class Job:
    """One asynchronous query: its parameters, phase, times and outcome."""

    id: str
    params: dict
    files: dict
    execution_duration: int
    created: float = dataclasses.field(default_factory=time.time)
    destruction: float = 0.0
    phase: str = "PENDING"
    started: float | None = None
    ended: float | None = None
    result: bytes | None = None
    error: bytes | None = None
    message: str = ""

    def request(self) -> Request:
        """The job's parameters as a request to the query code."""
        return Request("POST", "/tap/async", {k: [v] for k, v in self.params.items()}, {}, files=dict(self.files))


class JobStore:
    """The jobs of one service; ``execute(request) -> (VOTable bytes, error message or None)`` runs one."""

    def __init__(
        self, execute: Callable[[Request], tuple[bytes, str | None]], *, execution_duration: int, workers: int = 2
    ):
        self.execute, self.execution_duration = execute, int(execution_duration)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="uws", initializer=lower_priority
        )
        self._ids = itertools.count(1)

    # ---------------------------------------------------------------- store
    def create(self, request: Request) -> Job:
        params = {}
        for source in (request.query, request.form):
            for key, values in source.items():
                if values and key.upper() not in ("PHASE", "ACTION"):
                    params.setdefault(key.upper(), values[0])
        job = Job(f"{next(self._ids)}-{secrets.token_hex(4)}", params, dict(request.files), self.execution_duration)
        job.destruction = job.created + RETENTION
        with self._lock:
            self._purge()
            self._jobs[job.id] = job
        if (request.param("PHASE") or "").upper() == "RUN":
            self.run(job)
        return job

    def _purge(self) -> None:
        now = time.time()
        for job in [j for j in self._jobs.values() if j.destruction <= now]:
            self._drop(job)
        finished = sorted((j for j in self._jobs.values() if j.phase not in ACTIVE), key=lambda j: j.created)
        while len(self._jobs) >= MAX_JOBS and finished:
            self._drop(finished.pop(0))
        if len(self._jobs) >= MAX_JOBS:
            raise HTTPError(
                503, f"this service holds {MAX_JOBS} unfinished jobs; delete some or try later", {"Retry-After": "10"}
            )

    def _drop(self, job: Job) -> None:
        if job.phase in ACTIVE:
            job.phase = "ABORTED"
        self._jobs.pop(job.id, None)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.destruction <= time.time():
                self._drop(job)
                job = None
        if job is None:
            raise HTTPError(404, f"no job {job_id!r} (unknown, deleted or past its destruction time)")
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def delete(self, job: Job) -> None:
        with self._lock:
            self._drop(job)

    def close(self) -> None:
        """Stop taking jobs; queued ones are dropped (running ones end by their time limit)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- phases
    def run(self, job: Job) -> None:
        with self._lock:
            if job.phase != "PENDING":
                return
            job.phase = "QUEUED"
        self._pool.submit(self._execute, job)

    def abort(self, job: Job) -> None:
        with self._lock:
            if job.phase in ACTIVE:
                job.phase, job.ended = "ABORTED", time.time()

    def _execute(self, job: Job) -> None:
        with self._lock:
            if job.phase != "QUEUED":
                return
            job.phase, job.started = "EXECUTING", time.time()
        try:
            body, error = self.execute(job.request())
        except Exception as err:  # a bug must end the job, not leave it executing
            body, error = b"", f"{type(err).__name__}: {err}"
        with self._lock:
            if job.phase == "EXECUTING":
                job.ended = time.time()
                if error is None:
                    job.phase, job.result = "COMPLETED", body
                else:
                    job.phase, job.error, job.message = "ERROR", body, error

    async def wait(self, job: Job, seconds: float, phase: str | None) -> None:
        """Wait while ``job`` is active (and in ``phase``, when given), at most ``seconds`` (capped).

        A coroutine on the server's event loop: a client blocked in ``WAIT`` holds no thread.
        """
        deadline = time.monotonic() + (MAX_WAIT if seconds < 0 else min(seconds, MAX_WAIT))
        start = job.phase
        while job.phase == start and job.phase in ACTIVE and (phase is None or job.phase == phase):
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)

    # ---------------------------------------------------------------- documents
    def job_xml(self, job: Job, base: str) -> str:
        def element(name, value):
            if value is None:
                return f'<uws:{name} xsi:nil="true"/>'
            return f"<uws:{name}>{escape(str(value))}</uws:{name}>"

        params = "".join(f"<uws:parameter id={quoteattr(k)}>{escape(v)}</uws:parameter>" for k, v in job.params.items())
        results = (
            f'<uws:result id="result" xlink:href={quoteattr(f"{base}/{job.id}/results/result")}/>'
            if job.phase == "COMPLETED"
            else ""
        )
        error = (
            f'<uws:errorSummary type="fatal" hasDetail="true"><uws:message>{escape(job.message)}'
            "</uws:message></uws:errorSummary>"
            if job.phase == "ERROR"
            else ""
        )
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:job {UWS_NS} version="1.1">'
            f"{element('jobId', job.id)}{element('ownerId', None)}{element('phase', job.phase)}"
            f"{element('quote', None)}{element('creationTime', _iso(job.created))}"
            f"{element('startTime', _iso(job.started))}{element('endTime', _iso(job.ended))}"
            f"{element('executionDuration', job.execution_duration)}"
            f"{element('destruction', _iso(job.destruction))}"
            f"<uws:parameters>{params}</uws:parameters><uws:results>{results}</uws:results>{error}</uws:job>\n"
        )

    def list_xml(self, base: str) -> str:
        refs = "".join(
            f"<uws:jobref id={quoteattr(j.id)} xlink:href={quoteattr(f'{base}/{j.id}')}>"
            f"<uws:phase>{j.phase}</uws:phase><uws:creationTime>{_iso(j.created)}</uws:creationTime>"
            "</uws:jobref>"
            for j in self.jobs()
        )
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:jobs {UWS_NS} version="1.1">{refs}</uws:jobs>\n'


# ------------------------------------------------------------------------ routes
def register(server, store: JobStore, prefix: str = "/tap/async") -> None:
    """Add the UWS routes of ``store`` under ``prefix`` to ``server``."""

    def base(request: Request) -> str:
        return request.server.base_url + prefix

    def see(request: Request, where: str) -> Response:
        return Response(b"", status=303, headers={"Location": where})

    def xml(text: str) -> Response:
        return Response.text(text, content_type="text/xml; charset=utf-8")

    def create(request: Request) -> Response:
        job = store.create(request)
        return see(request, f"{base(request)}/{job.id}")

    async def job_doc(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        wait = request.param("WAIT")
        if wait is not None:
            try:
                seconds = float(wait)
            except ValueError:
                raise HTTPError(400, f"WAIT={wait[:20]!r} is not a number of seconds") from None
            phase = request.param("PHASE")
            await store.wait(job, seconds, phase.upper() if phase else None)
        return xml(store.job_xml(job, base(request)))

    def job_post(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        if (request.param("ACTION") or "").upper() == "DELETE":
            store.delete(job)
            return see(request, base(request))
        return parameters_post(request)

    def job_delete(request: Request) -> Response:
        store.delete(store.get(request.path_params["job"]))
        return see(request, base(request))

    def phase_get(request: Request) -> Response:
        return Response.text(store.get(request.path_params["job"]).phase)

    def phase_post(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        phase = (request.param("PHASE") or "").upper()
        if phase == "RUN":
            store.run(job)
        elif phase == "ABORT":
            store.abort(job)
        else:
            raise HTTPError(400, f"PHASE={phase!r}: use RUN or ABORT")
        return see(request, f"{base(request)}/{job.id}")

    def simple_get(name):
        def get(request: Request) -> Response:
            job = store.get(request.path_params["job"])
            value = {
                "executionduration": str(job.execution_duration),
                "destruction": _iso(job.destruction),
                "quote": "",
                "owner": "",
            }[name]
            return Response.text(value)

        return get

    def duration_post(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        text = request.param("EXECUTIONDURATION") or ""
        if not text.strip().isdigit() or len(text) > 12:
            raise HTTPError(400, f"EXECUTIONDURATION={text[:20]!r} is not a number of seconds")
        value = int(text)
        job.execution_duration = store.execution_duration if value <= 0 else min(value, store.execution_duration)
        return see(request, f"{base(request)}/{job.id}")

    def destruction_post(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        text = (request.param("DESTRUCTION") or "").strip()
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise HTTPError(400, f"DESTRUCTION={text[:40]!r} is not an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        job.destruction = min(when.timestamp(), job.created + RETENTION)
        return see(request, f"{base(request)}/{job.id}")

    def parameters_get(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        params = "".join(f"<uws:parameter id={quoteattr(k)}>{escape(v)}</uws:parameter>" for k, v in job.params.items())
        return xml(f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:parameters {UWS_NS}>{params}</uws:parameters>\n')

    def parameters_post(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        if job.phase != "PENDING":
            raise HTTPError(409, f"job {job.id} is {job.phase}; parameters can change only while PENDING")
        for source in (request.query, request.form):
            for key, values in source.items():
                if values and key.upper() not in ("PHASE", "ACTION"):
                    job.params[key.upper()] = values[0]
        job.files.update(request.files)
        if (request.param("PHASE") or "").upper() == "RUN":
            store.run(job)
        return see(request, f"{base(request)}/{job.id}")

    def results_get(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        result = (
            f'<uws:result id="result" xlink:href={quoteattr(f"{base(request)}/{job.id}/results/result")}/>'
            if job.phase == "COMPLETED"
            else ""
        )
        return xml(f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:results {UWS_NS}>{result}</uws:results>\n')

    def result_get(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        if job.phase != "COMPLETED" or job.result is None:
            raise HTTPError(404, f"job {job.id} is {job.phase}: no result")
        return Response(job.result, content_type="application/x-votable+xml")

    def error_get(request: Request) -> Response:
        job = store.get(request.path_params["job"])
        if job.phase != "ERROR" or job.error is None:
            raise HTTPError(404, f"job {job.id} is {job.phase}: no error")
        return Response(job.error, content_type="application/x-votable+xml")

    one = prefix + "/{job}"
    routes = [
        ("POST", prefix, create, False),
        ("GET", prefix, lambda r: xml(store.list_xml(base(r))), True),
        ("GET", one, job_doc, True),
        ("POST", one, job_post, True),
        ("DELETE", one, job_delete, True),
        ("GET", one + "/phase", phase_get, True),
        ("POST", one + "/phase", phase_post, True),
        ("GET", one + "/executionduration", simple_get("executionduration"), True),
        ("POST", one + "/executionduration", duration_post, True),
        ("GET", one + "/destruction", simple_get("destruction"), True),
        ("POST", one + "/destruction", destruction_post, True),
        ("GET", one + "/quote", simple_get("quote"), True),
        ("GET", one + "/owner", simple_get("owner"), True),
        ("GET", one + "/parameters", parameters_get, True),
        ("POST", one + "/parameters", parameters_post, True),
        ("GET", one + "/results", results_get, True),
        ("GET", one + "/results/result", result_get, True),
        ("GET", one + "/error", error_get, True),
    ]
    for method, pattern, handler, inline in routes:
        server.add_route(method, pattern, handler, inline=inline)
