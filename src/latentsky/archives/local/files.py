"""Serving archive files as the archives do (uncompressed, named, with byte ranges)."""

from __future__ import annotations

import functools
import gzip
import io
import re
from pathlib import Path

from latentsky.archives.local.server import Response


def fits_file_response(path: Path) -> Response:
    """Serve a FITS file as the archives do: uncompressed, named, with byte ranges.

    Files kept gzipped on disk (the bundled sample) are sent decompressed,
    because ESO's and SDSS's file endpoints send plain FITS.
    """
    name = re.sub(r"\.gz$", "", path.name, flags=re.I)
    if path.name.lower().endswith(".gz"):
        resp = Response(_gunzipped(path, path.stat().st_mtime_ns), content_type="application/fits")
        resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return resp
    return Response.from_file(path, content_type="application/fits", filename=name)


@functools.lru_cache(maxsize=32)
def _gunzipped(path: Path, mtime_ns: int) -> bytes:
    with gzip.open(path, "rb") as fh:
        return fh.read()


def fits_bytes(hdu) -> bytes:
    """The bytes of a FITS file holding ``hdu``."""
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()
