"""What the local TAP service says about its tables: ObsCore column metadata, TAP_SCHEMA, VOSI ``/tables``.

The served ``ivoa.ObsCore`` table carries every mandatory column of the IVOA
ObsCore 1.1 data model (empty where the files' headers do not tell), in the
model's order, with its datatype, unit, UCD and utype, plus ESO's own columns
(``dp_id``, ``dataproduct_subtype``, ``snr``...).  The same metadata is served
three ways, which must agree: on the result columns of every query, in the
``TAP_SCHEMA`` tables (queryable with ADQL), and in the VOSI ``/tables`` document.
"""

from __future__ import annotations

import dataclasses
import functools
from xml.sax.saxutils import escape

import numpy as np
from astropy.table import MaskedColumn, Table


@dataclasses.dataclass(frozen=True)
class ColumnInfo:
    """One column as TAP_SCHEMA describes it (``datatype`` is a VOTable type; ``arraysize`` "*" for text)."""

    name: str
    datatype: str
    unit: str = ""
    ucd: str = ""
    utype: str = ""
    description: str = ""
    arraysize: str = ""
    xtype: str = ""
    principal: int = 0
    std: int = 1


def _c(name, datatype, unit, ucd, utype, description, principal=0, xtype="", std=1):
    arraysize = "*" if datatype == "char" else ""
    return ColumnInfo(
        name, datatype, unit, ucd, utype and "obscore:" + utype, description, arraysize, xtype, principal, std
    )


OBSCORE = (
    _c(
        "dataproduct_type",
        "char",
        "",
        "meta.code.class",
        "ObsDataset.dataProductType",
        "Data product (file content) primary type",
        1,
    ),
    _c(
        "calib_level",
        "short",
        "",
        "meta.code;obs.calib",
        "ObsDataset.calibLevel",
        "Calibration level of the observation: in {0, 1, 2, 3, 4}",
        1,
    ),
    _c("obs_collection", "char", "", "meta.id", "DataID.Collection", "Name of the data collection", 1),
    _c("obs_id", "char", "", "meta.id", "DataID.observationID", "Internal ID given by the ObsTAP service", 1),
    _c(
        "obs_publisher_did",
        "char",
        "",
        "meta.ref.ivoid",
        "Curation.PublisherDID",
        "ID for the Dataset given by the publisher",
        1,
    ),
    _c("access_url", "char", "", "meta.ref.url", "Access.Reference", "URL used to access (download) dataset", 1),
    _c("access_format", "char", "", "meta.code.mime", "Access.Format", "File content format", 1),
    _c("access_estsize", "long", "kbyte", "phys.size;meta.file", "Access.Size", "Estimated size of dataset", 1),
    _c("target_name", "char", "", "meta.id;src", "Target.Name", "Astronomical object observed, if any", 1),
    _c(
        "s_ra",
        "double",
        "deg",
        "pos.eq.ra",
        "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C1",
        "Central right ascension, ICRS",
        1,
    ),
    _c(
        "s_dec",
        "double",
        "deg",
        "pos.eq.dec",
        "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C2",
        "Central declination, ICRS",
        1,
    ),
    _c(
        "s_fov",
        "double",
        "deg",
        "phys.angSize;instr.fov",
        "Char.SpatialAxis.Coverage.Bounds.Extent.diameter",
        "Diameter (bounds) of the covered region",
        1,
    ),
    _c(
        "s_region",
        "char",
        "",
        "pos.outline;obs.field",
        "Char.SpatialAxis.Coverage.Support.Area",
        "Sky region covered by the data product (expressed in ICRS frame)",
        1,
        xtype="adql:REGION",
    ),
    _c(
        "s_resolution",
        "double",
        "arcsec",
        "pos.angResolution",
        "Char.SpatialAxis.Resolution.Refval.value",
        "Spatial resolution of data as FWHM",
        1,
    ),
    _c(
        "t_min",
        "double",
        "d",
        "time.start;obs.exposure",
        "Char.TimeAxis.Coverage.Bounds.Limits.StartTime",
        "Start time in MJD",
        1,
    ),
    _c(
        "t_max",
        "double",
        "d",
        "time.end;obs.exposure",
        "Char.TimeAxis.Coverage.Bounds.Limits.StopTime",
        "Stop time in MJD",
        1,
    ),
    _c(
        "t_exptime",
        "double",
        "s",
        "time.duration;obs.exposure",
        "Char.TimeAxis.Coverage.Support.Extent",
        "Total exposure time",
        1,
    ),
    _c(
        "t_resolution",
        "double",
        "s",
        "time.resolution",
        "Char.TimeAxis.Resolution.Refval.value",
        "Temporal resolution FWHM",
        1,
    ),
    _c(
        "em_min",
        "double",
        "m",
        "em.wl;stat.min",
        "Char.SpectralAxis.Coverage.Bounds.Limits.LoLimit",
        "Start in spectral coordinates",
        1,
    ),
    _c(
        "em_max",
        "double",
        "m",
        "em.wl;stat.max",
        "Char.SpectralAxis.Coverage.Bounds.Limits.HiLimit",
        "Stop in spectral coordinates",
        1,
    ),
    _c(
        "em_res_power",
        "double",
        "",
        "spect.resolution",
        "Char.SpectralAxis.Resolution.ResolPower.refVal",
        "Value of the resolving power along the spectral axis (R)",
        1,
    ),
    _c("o_ucd", "char", "", "meta.ucd", "Char.ObservableAxis.ucd", "Nature of the observable axis", 1),
    _c(
        "pol_states",
        "char",
        "",
        "meta.code;phys.polarization",
        "Char.PolarizationAxis.stateList",
        "List of polarization states present in the data file",
        1,
    ),
    _c(
        "facility_name",
        "char",
        "",
        "meta.id;instr.tel",
        "Provenance.ObsConfig.Facility.name",
        "The name of the facility, telescope, or space craft used for the observation",
        1,
    ),
    _c(
        "instrument_name",
        "char",
        "",
        "meta.id;instr",
        "Provenance.ObsConfig.Instrument.name",
        "The name of the instrument used for the observation",
        1,
    ),
    _c("s_xel1", "long", "", "meta.number", "Char.SpatialAxis.numBins1", "Number of elements along the first axis"),
    _c("s_xel2", "long", "", "meta.number", "Char.SpatialAxis.numBins2", "Number of elements along the second axis"),
    _c("t_xel", "long", "", "meta.number", "Char.TimeAxis.numBins", "Number of elements along the time axis"),
    _c("em_xel", "long", "", "meta.number", "Char.SpectralAxis.numBins", "Number of elements along the spectral axis"),
    _c(
        "pol_xel",
        "long",
        "",
        "meta.number",
        "Char.PolarizationAxis.numBins",
        "Number of polarization samples in pol_states",
    ),
    _c(
        "obs_release_date",
        "char",
        "",
        "time.release",
        "Curation.releaseDate",
        "Observation data release date (ISO 8601)",
        xtype="timestamp",
    ),
    # ESO's own columns (its tap_obs service has them beside ObsCore's)
    _c("dp_id", "char", "", "meta.id", "", "ESO data product identifier (the file's archive name)", 1, std=0),
    _c(
        "dataproduct_subtype",
        "char",
        "",
        "meta.code.class",
        "ObsDataset.dataProductSubtype",
        "Data product specific type (ESO's product category, e.g. s1d)",
    ),
    _c("snr", "double", "", "stat.snr", "", "Median signal-to-noise ratio of the spectrum", std=0),
)
"""The columns of ``ivoa.ObsCore`` as served, in order."""

SCHEMA_DESCRIPTIONS = {
    "ivoa": "IVOA-defined tables (the ObsCore data model)",
    "tap_schema": "Description of the tables of this service",
    "tap_upload": "Tables uploaded with a query",
}

_TAP_SCHEMA = {
    "schemas": [("schema_name", "char"), ("utype", "char"), ("description", "char"), ("schema_index", "int")],
    "tables": [
        ("schema_name", "char"),
        ("table_name", "char"),
        ("table_type", "char"),
        ("utype", "char"),
        ("description", "char"),
        ("table_index", "int"),
    ],
    "columns": [
        ("table_name", "char"),
        ("column_name", "char"),
        ("utype", "char"),
        ("ucd", "char"),
        ("unit", "char"),
        ("description", "char"),
        ("datatype", "char"),
        ("arraysize", "char"),
        ("xtype", "char"),
        ("size", "int"),
        ("principal", "int"),
        ("indexed", "int"),
        ("std", "int"),
        ("column_index", "int"),
    ],
    "keys": [
        ("key_id", "char"),
        ("from_table", "char"),
        ("target_table", "char"),
        ("utype", "char"),
        ("description", "char"),
    ],
    "key_columns": [("key_id", "char"), ("from_column", "char"), ("target_column", "char")],
}
"""TAP 1.1's TAP_SCHEMA tables and their columns."""


RESERVED = {"size"}
"""Column names of ours that are ADQL reserved words: TAP_SCHEMA and /tables give them delimited (``"size"``)."""


def adql_name(name: str) -> str:
    """The column name as a query writes it: delimited when it is an ADQL reserved word."""
    return f'"{name}"' if name.lower() in RESERVED else name


_KEYS = [
    ("tables_schema", "tables", "schemas", "schema_name", "schema_name"),
    ("columns_table", "columns", "tables", "table_name", "table_name"),
    ("keys_from", "keys", "tables", "from_table", "table_name"),
    ("keys_target", "keys", "tables", "target_table", "table_name"),
    ("key_columns_key", "key_columns", "keys", "key_id", "key_id"),
]
"""TAP_SCHEMA's foreign keys: (key_id, from table, target table, from column, target column)."""


def _info_of(name: str, datatype: str) -> ColumnInfo:
    return ColumnInfo(name, datatype, arraysize="*" if datatype == "char" else "", principal=1)


def table_infos() -> dict[str, tuple[str, tuple[ColumnInfo, ...]]]:
    """``{"schema.Table": (description, columns)}`` of every table the service has."""
    out = {"ivoa.ObsCore": ("ObsCore 1.1 table of the spectra in this archive's folder", OBSCORE)}
    for name, cols in _TAP_SCHEMA.items():
        out[f"TAP_SCHEMA.{name}"] = (
            f"TAP_SCHEMA {name}: the {name} of this service",
            tuple(_info_of(c, t) for c, t in cols),
        )
    return out


def _numpy(info: ColumnInfo):
    return {
        "double": float,
        "float": np.float32,
        "long": np.int64,
        "int": np.int32,
        "short": np.int16,
        "boolean": bool,
    }.get(info.datatype, str)


def dress(table: Table, columns: tuple[ColumnInfo, ...]) -> Table:
    """``table`` with exactly ``columns``, in order, typed and described; missing ones are all NULL.

    Empty strings count as missing (the folder scan's convention), so they are NULL too.
    """
    out = Table()
    n = len(table)
    for info in columns:
        typ = _numpy(info)
        if info.name in table.colnames:
            src = table[info.name]
            if typ is str:
                values = np.array([str(v) for v in src], dtype=str) if n else np.array([], dtype="U1")
                mask = (values == "") | np.ma.getmaskarray(src)
            elif typ is float:
                values = np.asarray(np.ma.filled(src.astype(float) if hasattr(src, "mask") else src, np.nan), float)
                mask = np.zeros(n, bool)
            else:
                values = np.asarray(np.ma.filled(src, 0)).astype(typ)
                mask = np.ma.getmaskarray(src) | (values < 0 if typ is not bool else False)
        else:
            values = np.full(n, np.nan) if typ is float else np.zeros(n, dtype=typ if typ is not str else "U1")
            mask = np.ones(n, bool)
        col = MaskedColumn(values, name=info.name, mask=mask) if mask.any() else MaskedColumn(values, name=info.name)
        describe(col, info)
        out.add_column(col)
    return out


def describe(col, info: ColumnInfo) -> None:
    """Put ``info`` on an astropy column (unit, description, and ucd/utype/xtype/datatype in ``meta``)."""
    col.unit = info.unit or None
    col.description = info.description
    col.meta.update(
        {k: getattr(info, k) for k in ("ucd", "utype", "xtype", "datatype", "arraysize") if getattr(info, k)}
    )


@functools.lru_cache(maxsize=1)
def tap_schema_tables() -> dict[str, Table]:
    """The five TAP_SCHEMA tables, keyed ``"tap_schema.<name>"``, describing :func:`table_infos` (built once;
    read them, never change them)."""
    infos = table_infos()
    schemas = sorted({name.split(".")[0] for name in infos})
    rows = {
        "schemas": [(s, "", SCHEMA_DESCRIPTIONS.get(s.lower(), ""), i) for i, s in enumerate(schemas)],
        "tables": [
            (name.split(".")[0], name, "table", "", desc, i) for i, (name, (desc, _)) in enumerate(infos.items())
        ],
        "columns": [
            (
                name,
                adql_name(c.name),
                c.utype,
                c.ucd,
                c.unit,
                c.description,
                c.datatype,
                c.arraysize,
                c.xtype,
                None,
                c.principal,
                0,
                c.std,
                j,
            )
            for name, (_, cols) in infos.items()
            for j, c in enumerate(cols)
        ],
        "keys": [(key, f"TAP_SCHEMA.{src}", f"TAP_SCHEMA.{dst}", "", "") for key, src, dst, _, _ in _KEYS],
        "key_columns": [(key, fc, tc) for key, _, _, fc, tc in _KEYS],
    }
    out = {}
    for name, cols in _TAP_SCHEMA.items():
        data = list(zip(*rows[name])) if rows[name] else [[] for _ in cols]
        raw = Table(
            {
                c: (list(v) if v else np.array([], dtype=str if t == "char" else np.int32))
                for (c, t), v in zip(cols, data)
            }
        )
        out[f"tap_schema.{name}"] = dress(_nulls(raw), infos[f"TAP_SCHEMA.{name}"][1])
    return out


def _nulls(table: Table) -> Table:
    for name in table.colnames:
        if table[name].dtype.kind == "O":  # None in an integer column (TAP_SCHEMA.columns.size)
            values = table[name]
            table[name] = MaskedColumn(
                [0 if v is None else v for v in values], mask=[v is None for v in values], dtype=np.int32
            )
    return table


def vosi_tables() -> str:
    """The VOSI ``/tables`` document (VODataService 1.2 types)."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
        'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    ]
    by_schema: dict[str, list] = {}
    for name, (desc, cols) in table_infos().items():
        by_schema.setdefault(name.split(".")[0], []).append((name, desc, cols))
    for schema, tables in sorted(by_schema.items()):
        parts.append(
            f"<schema><name>{schema}</name><description>{escape(SCHEMA_DESCRIPTIONS[schema.lower()])}</description>"
        )
        for name, desc, cols in tables:
            parts.append(f'<table type="table"><name>{name}</name><description>{escape(desc)}</description>')
            for c in cols:
                parts.append(
                    f"<column><name>{escape(adql_name(c.name))}</name>"
                    + (f"<description>{escape(c.description)}</description>" if c.description else "")
                    + (f"<unit>{escape(c.unit)}</unit>" if c.unit else "")
                    + (f"<ucd>{escape(c.ucd)}</ucd>" if c.ucd else "")
                    + (f"<utype>{escape(c.utype)}</utype>" if c.utype else "")
                    + '<dataType xsi:type="vs:VOTableType"'
                    + (f' arraysize="{c.arraysize}"' if c.arraysize else "")
                    + (f' extendedType="{c.xtype}"' if c.xtype else "")
                    + f">{c.datatype}</dataType>"
                    + ("<flag>std</flag>" if c.std else "")
                    + ("<flag>principal</flag>" if c.principal else "")
                    + "</column>"
                )
            for _, src, dst, fc, tc in _KEYS:
                if name == f"TAP_SCHEMA.{src}":
                    parts.append(
                        f"<foreignKey><targetTable>TAP_SCHEMA.{dst}</targetTable><fkColumn>"
                        f"<fromColumn>{fc}</fromColumn><targetColumn>{tc}</targetColumn></fkColumn>"
                        "</foreignKey>"
                    )
            parts.append("</table>")
        parts.append("</schema>")
    parts.append("</vosi:tableset>\n")
    return "".join(parts)
