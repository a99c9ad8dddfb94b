"""VOTable documents of the local TAP service: query results and error documents (VOTable 1.4, TABLEDATA).

Each FIELD takes its datatype, arraysize, unit, UCD, utype and xtype from the
column's metadata when the column comes from a described table
(:func:`~.tap_schema.describe`), so that a result declares what ``TAP_SCHEMA``
and ``/tables`` declare; other columns get the VOTable type of their numpy type.
"""

from __future__ import annotations

import io
import warnings
from xml.sax.saxutils import escape

import numpy as np
from astropy.table import Table

VOTABLE_TYPE = "application/x-votable+xml"
VERSION = "1.4"

_NUMPY_TYPES = {
    "f8": "double",
    "f4": "float",
    "i8": "long",
    "i4": "int",
    "i2": "short",
    "u1": "unsignedByte",
    "b1": "boolean",
    "i1": "short",
    "u2": "int",
    "u4": "long",
    "u8": "long",
}


def _datatype(col) -> tuple[str, str | None]:
    """VOTable datatype and arraysize of a column."""
    meta = col.meta
    if meta.get("datatype"):
        return meta["datatype"], meta.get("arraysize") or None
    kind = col.dtype.kind
    if kind in "USO":
        text = [v for v in np.asarray(col).ravel().tolist() if isinstance(v, str)]
        return ("unicodeChar" if any(not s.isascii() for s in text) else "char"), "*"
    return _NUMPY_TYPES.get(col.dtype.str[1:], "double"), None


def results_document(table: Table, *, overflow: bool = False, infos: dict | None = None) -> bytes:
    """A TAP result: ``QUERY_STATUS=OK`` (and ``OVERFLOW`` after the table when rows were cut)."""
    from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile

    vot = VOTableFile(version=VERSION)
    resource = Resource(type="results")
    vot.resources.append(resource)
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    for name, value in (infos or {}).items():
        resource.infos.append(Info(name=name, value=str(value)))
    element = TableElement(vot)
    resource.tables.append(element)
    fields = []
    for name in table.colnames:
        col = table[name]
        datatype, arraysize = _datatype(col)
        kw = {"name": name, "datatype": datatype, "arraysize": arraysize}
        for attr in ("ucd", "utype", "xtype"):
            if col.meta.get(attr):
                kw[attr] = col.meta[attr]
        if col.unit is not None:
            kw["unit"] = col.unit.to_string("vounit") if hasattr(col.unit, "to_string") else str(col.unit)
        field = Field(vot, **kw)
        if col.description:
            field.description = col.description
        fields.append(field)
    element.fields.extend(fields)
    element.create_arrays(len(table))
    for name, field in zip(table.colnames, fields):
        col = table[name]
        mask = np.ma.getmaskarray(col)
        if field.datatype in ("char", "unicodeChar"):
            values = np.array(["" if m else _text(v, field.datatype) for v, m in zip(col.tolist(), mask)], dtype=object)
        else:
            values = np.ma.filled(col, 0) if np.ma.isMaskedArray(col) or hasattr(col, "mask") else np.asarray(col)
        element.array[name] = values
        element.array.mask[name] = mask
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vot.to_xml(buf, tabledata_format="tabledata")
    xml = buf.getvalue()
    if overflow:
        # TAP puts the OVERFLOW status after the table, where a streaming server learns it
        end = xml.rindex(b"</RESOURCE>")
        xml = xml[:end] + b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>\n' + xml[end:]
    return xml


def _text(value, datatype: str) -> str:
    """A cell's text; ``char`` is ASCII, so other characters become '?' there."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text if datatype == "unicodeChar" or text.isascii() else text.encode("ascii", "replace").decode()


def error_document(message: str) -> bytes:
    """A TAP error document (``QUERY_STATUS=ERROR``) with ``message``."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<VOTABLE version="{VERSION}" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
        f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        f'<RESOURCE type="results">\n<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n'
        f"</RESOURCE>\n</VOTABLE>\n"
    ).encode("utf-8")
