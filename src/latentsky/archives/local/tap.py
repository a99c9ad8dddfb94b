"""The local archive's TAP service (ESO ``tap_obs``-like: ADQL on ``ivoa.ObsCore``) and ESO file downloads.

Route handlers take the :class:`~latentsky.archives.local.archive.LocalArchive`
they serve and the request; :meth:`LocalArchive.register` binds them.
"""

from __future__ import annotations

import io
import warnings

from astropy.table import Table

from latentsky.archives.local import adql
from latentsky.archives.local.files import fits_file_response
from latentsky.archives.local.server import HTTPError, Request, Response

VOTABLE_TYPE = "application/x-votable+xml"


def capabilities(archive, request: Request) -> Response:
    body = ('<?xml version="1.0"?><vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">'
            '<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">'
            f'<interface role="std"><accessURL use="base">{archive.base_url}/tap</accessURL></interface>'
            '<language><name>ADQL</name><version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version></language>'
            f'<outputLimit><default unit="row">{archive.tap_maxrec}</default>'
            f'<hard unit="row">{archive.tap_maxrec}</hard></outputLimit>'
            '</capability></vosi:capabilities>')
    return Response.text(body, content_type="text/xml")

def sync(archive, request: Request) -> Response:
    if (request.param("REQUEST") or "doQuery").lower() != "doquery":
        return votable_error(f"REQUEST={request.param('REQUEST')!r} is not supported; use doQuery")
    lang = (request.param("LANG") or "ADQL").upper()
    if not lang.startswith("ADQL"):
        return votable_error(f"LANG={lang!r} is not supported; use ADQL")
    text = request.param("QUERY")
    if not text:
        return votable_error("the QUERY parameter is missing")
    maxrec = archive.tap_maxrec
    if request.param("MAXREC") is not None:
        try:
            maxrec = min(maxrec, int(request.param("MAXREC")))
        except ValueError:
            return votable_error(f"MAXREC={request.param('MAXREC')!r} is not an integer")
    tables = {"ivoa.obscore": archive.obscore_table()}
    try:
        tables.update(_uploads(request))
        result, overflow = adql.run(text, tables, maxrec=maxrec)
    except adql.AdqlError as err:
        return votable_error(f"ADQL error: {err}")
    except ValueError as err:
        return votable_error(str(err))
    return Response(votable_bytes(result, overflow=overflow), content_type=VOTABLE_TYPE)

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
        name = name.strip()
        if not source.startswith("param:"):
            raise ValueError(f"UPLOAD {name!r}: only inline uploads (param:...) are supported")
        field = source[len("param:"):]
        data = request.files.get(field)
        if data is None:
            raise ValueError(f"UPLOAD {name!r}: no multipart field {field!r} in the request")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tables[f"tap_upload.{name.lower()}"] = Table.read(io.BytesIO(data), format="votable")
    return tables


def votable_bytes(table: Table, *, overflow: bool = False) -> bytes:
    """A TAP result document: the table, ``QUERY_STATUS=OK`` and, when cut, ``OVERFLOW`` after it."""
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    table = table.copy(copy_data=False)
    for name in table.colnames:  # VOTable cannot write numpy object columns
        if table[name].dtype.kind == "O":
            table[name] = table[name].astype(str)
    vot = from_table(table)
    resource = vot.resources[0]
    resource.type = "results"
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vot.to_xml(buf)
    xml = buf.getvalue()
    if overflow:
        # TAP puts the OVERFLOW status after the table, where a streaming server learns it
        end = xml.rindex(b"</RESOURCE>")
        xml = xml[:end] + b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>\n' + xml[end:]
    return xml


def votable_error(message: str, status: int = 400) -> Response:
    """A TAP error document (``QUERY_STATUS=ERROR``)."""
    from xml.sax.saxutils import escape

    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
            f'<RESOURCE type="results"><INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>'
            '</RESOURCE>\n</VOTABLE>\n')
    return Response(body.encode(), status=status, content_type=VOTABLE_TYPE)
