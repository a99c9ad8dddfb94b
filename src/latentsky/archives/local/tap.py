"""The local archive's TAP 1.1 service (ESO ``tap_obs``-like: ADQL on ``ivoa.ObsCore``) and ESO file downloads.

==========================  ===================================================================
route                       what
==========================  ===================================================================
``/tap/sync``               synchronous queries (GET or POST: ``QUERY``, ``LANG=ADQL``, ``MAXREC``,
                            ``RESPONSEFORMAT``, ``UPLOAD=name,param:part`` with a multipart VOTable)
``/tap/async``              asynchronous queries (UWS 1.1 jobs, :mod:`.uws`)
``/tap/capabilities``       VOSI capabilities (TAPRegExt: ADQL 2.0 and its geometry, VOTable output,
                            inline upload, row limits, the ObsCore 1.1 data model)
``/tap/availability``       VOSI availability
``/tap/tables``             VOSI tables (``ivoa.ObsCore`` and ``TAP_SCHEMA``, :mod:`.tap_schema`)
``/tap/examples``           DALI examples: queries that work here
``/eso/file/{dp_id}``       ESO data portal file download
==========================  ===================================================================

STILTS ``taplint`` finds no error and no warning in this service; its one
failure is the ObsLocTAP stage (no ``ivoa.obsplan`` table: not a data model
offered here), see ``docs/decisions/local-archive-tap.md``.  Route
handlers take the :class:`~latentsky.archives.local.archive.LocalArchive` they
serve and the request; :meth:`LocalArchive.register` binds them.
"""

from __future__ import annotations

import functools
import io
import warnings
from xml.sax.saxutils import escape

from astropy.table import Table

from latentsky.archives.local import adql, tap_schema
from latentsky.archives.local.files import fits_file_response
from latentsky.archives.local.messages import HTTPError, Request, Response
from latentsky.archives.local.votable import VOTABLE_TYPE, error_document, results_document

MAX_UPLOAD_BYTES = 16 * 1024 * 1024
"""Largest uploaded table (bytes); the server refuses larger request bodies anyway."""

_FORMATS = {
    "votable",
    "application/x-votable+xml",
    "text/xml",
    "application/x-votable+xml;serialization=tabledata",
    "votable/td",
}

EXAMPLES = {
    "cone": (
        "HARPS spectra within 1 degree of alpha Cen",
        "SELECT TOP 20 dp_id, target_name, s_ra, s_dec, t_min, access_url FROM ivoa.ObsCore "
        "WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', 219.9, -60.83, 1.0)) = 1",
    ),
    "per-target": (
        "How many spectra each target has",
        "SELECT target_name, COUNT(*) AS n FROM ivoa.ObsCore GROUP BY target_name ORDER BY n DESC",
    ),
    "columns": (
        "The columns of the ObsCore table",
        "SELECT column_name, datatype, unit, ucd FROM TAP_SCHEMA.columns WHERE table_name = 'ivoa.ObsCore'",
    ),
}
"""Example queries served at ``/tap/examples``: name -> (title, ADQL)."""


class QueryError(ValueError):
    """A query the service refuses (bad ADQL, bad parameters): its message goes in the error document."""


def _xml(text: str) -> Response:
    return Response.text(text, content_type="text/xml; charset=utf-8")


def capabilities(archive, request: Request) -> Response:
    base = f"{archive.base_url}/tap"
    geo = "".join(f"<feature><form>{f}</form></feature>" for f in adql.GEOMETRY_FUNCTIONS)
    vosi = "".join(
        f'<capability standardID="ivo://ivoa.net/std/{sid}"><interface xsi:type="{kind}">'
        f'<accessURL use="full">{base}/{path}</accessURL></interface></capability>'
        for sid, path, kind in (
            ("VOSI#capabilities", "capabilities", "vs:ParamHTTP"),
            ("VOSI#availability", "availability", "vs:ParamHTTP"),
            ("VOSI#tables-1.1", "tables", "vs:ParamHTTP"),
            ("DALI#examples", "examples", "vr:WebBrowser"),
        )
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0" '
        'xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0">'
        f'{vosi}<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">'
        f'<interface role="std" xsi:type="vs:ParamHTTP" version="1.1"><accessURL use="base">{base}</accessURL>'
        "</interface>"
        '<dataModel ivo-id="ivo://ivoa.net/std/ObsCore#core-1.1">ObsCore-1.1</dataModel>'
        '<language><name>ADQL</name><version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>'
        "<description>ADQL 2.0 run by SQLite; LIKE is case-sensitive</description>"
        f'<languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-adqlgeo">{geo}</languageFeatures>'
        "</language>"
        '<outputFormat ivo-id="ivo://ivoa.net/std/TAPRegExt#output-votable-td">'
        f"<mime>{VOTABLE_TYPE}</mime><alias>votable</alias></outputFormat>"
        '<uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-inline"/>'
        '<uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-http"/>'
        f"<retentionPeriod><default>{archive.jobs_retention}</default></retentionPeriod>"
        f"<executionDuration><hard>{int(adql.QUERY_SECONDS)}</hard></executionDuration>"
        f'<outputLimit><default unit="row">{archive.tap_maxrec}</default>'
        f'<hard unit="row">{archive.tap_maxrec}</hard></outputLimit>'
        f'<uploadLimit><hard unit="byte">{MAX_UPLOAD_BYTES}</hard></uploadLimit>'
        "</capability></vosi:capabilities>\n"
    )
    return _xml(body)


def availability(archive, request: Request) -> Response:
    return _xml(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
        "<vosi:available>true</vosi:available><vosi:note>the local archive is answering</vosi:note>"
        "</vosi:availability>\n"
    )


@functools.lru_cache(maxsize=1)
def _tables_document() -> str:
    return tap_schema.vosi_tables()


def tables(archive, request: Request) -> Response:
    return _xml(_tables_document())


def examples(archive, request: Request) -> Response:
    items = "".join(
        f'<div typeof="example" id="{name}" resource="#{name}"><h2 property="name">{escape(title)}</h2>'
        f'<pre class="dali-example" property="query">{escape(query)}</pre></div>'
        for name, (title, query) in EXAMPLES.items()
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Examples of the local archive</title></head>'
        f'<body vocab="http://www.ivoa.net/rdf/examples#"><h1>Example queries</h1>{items}</body></html>\n'
    )
    return Response.text(body, content_type="application/xhtml+xml; charset=utf-8")


def sync(archive, request: Request) -> Response:
    body, error = execute(archive, request)
    return Response(body, status=200 if error is None else 400, content_type=VOTABLE_TYPE)


def execute(archive, request: Request) -> tuple[bytes, str | None]:
    """Run the query a (sync or async) request asks for: (VOTable document, error message or None)."""
    try:
        table, overflow = _run(archive, request)
    except QueryError as err:
        return error_document(str(err)), str(err)
    return results_document(table, overflow=overflow), None


def _run(archive, request: Request) -> tuple[Table, bool]:
    if (request.param("REQUEST") or "doQuery").lower() != "doquery":
        raise QueryError(f"REQUEST={request.param('REQUEST')!r} is not supported; use doQuery")
    lang = (request.param("LANG") or "ADQL").upper()
    if lang not in ("ADQL", "ADQL-2.0", "ADQL-2.1"):
        raise QueryError(f"LANG={lang!r} is not supported; use ADQL")
    fmt = (request.param("RESPONSEFORMAT") or request.param("FORMAT") or "votable").lower().replace(" ", "")
    if fmt not in _FORMATS:
        raise QueryError(f"RESPONSEFORMAT={fmt!r} is not supported; use votable")
    text = request.param("QUERY")
    if not text:
        raise QueryError("the QUERY parameter is missing")
    maxrec = archive.tap_maxrec
    if request.param("MAXREC") is not None:
        try:
            maxrec = max(0, min(maxrec, int(request.param("MAXREC"))))
        except ValueError:
            raise QueryError(f"MAXREC={request.param('MAXREC')[:20]!r} is not an integer") from None
    tables = {"ivoa.obscore": archive.obscore_table(), **tap_schema.tap_schema_tables(), **_uploads(request)}
    try:
        return adql.run(text, tables, maxrec=maxrec)
    except adql.AdqlError as err:
        raise QueryError(f"ADQL error: {err}") from None


def eso_file(archive, request: Request) -> Response:
    dp_id = request.path_params["dp_id"]
    rows = archive.catalog.obscore[archive.catalog.obscore["dp_id"] == dp_id]
    if len(rows) == 0:
        raise HTTPError(404, f"no product with dp_id {dp_id!r}")
    return fits_file_response(archive.catalog.path_of(rows["filename"][0]))


def _uploads(request: Request) -> dict[str, Table]:
    spec = request.param("UPLOAD")
    if not spec:
        return {}
    tables = {}
    for item in spec.split(";"):
        name, _, source = item.partition(",")
        name, source = name.strip(), source.strip()
        if not name.isidentifier():
            raise QueryError(f"UPLOAD: {name!r} is not a table name")
        if source.lower().startswith(("http://", "https://")):
            data = _fetch(name, source, request)
        elif source.startswith("param:"):
            field = source[len("param:") :]
            data = request.files.get(field)
            if data is None and request.param(field) is not None:
                data = request.param(field).encode("utf-8")
            if data is None:
                raise QueryError(f"UPLOAD {name!r}: no multipart part {field!r} in the request")
        else:
            raise QueryError(f"UPLOAD {name!r}: {source[:60]!r} is neither param:<part> nor an http(s) URL")
        if len(data) > MAX_UPLOAD_BYTES:
            raise QueryError(f"UPLOAD {name!r}: {len(data)} bytes is over the limit of {MAX_UPLOAD_BYTES}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tables[f"tap_upload.{name.lower()}"] = Table.read(io.BytesIO(data), format="votable")
        except Exception as err:  # whatever astropy makes of a broken document: the user's error
            raise QueryError(f"UPLOAD {name!r}: not a readable VOTable ({type(err).__name__}: {err})") from None
    return tables


def _fetch(name: str, url: str, request: Request) -> bytes:
    """An uploaded table given by URL (TAPRegExt ``upload-http``), at most :data:`MAX_UPLOAD_BYTES`.

    A server open to other machines (``--host 0.0.0.0``) fetches only public
    addresses, so that a client cannot make it read what only it can reach.
    """
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    import requests

    host = urlsplit(url).hostname or ""
    server = request.server
    if server is not None and not server.loopback_only:
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError as err:
            raise QueryError(f"UPLOAD {name!r}: cannot resolve {host!r} ({err})") from None
        if any(not ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
            raise QueryError(f"UPLOAD {name!r}: {host!r} is not a public address; upload the table inline")
    try:
        with requests.get(url, timeout=10, stream=True, allow_redirects=False) as r:
            r.raise_for_status()
            data = b""
            for chunk in r.iter_content(64 * 1024):
                data += chunk
                if len(data) > MAX_UPLOAD_BYTES:
                    break
            return data
    except requests.RequestException as err:
        raise QueryError(f"UPLOAD {name!r}: cannot read {url[:100]!r} ({err})") from None
