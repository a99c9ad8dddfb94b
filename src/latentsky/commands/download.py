"""``latentsky download TABLE --dest DIR``: fetch every file a table points to.

TABLE is any table astropy reads (ECSV, CSV, VOTable, FITS, Parquet) with an
access-URL column (``access_url``, ``url``...), such as ``latentsky query``
writes; or a destination folder / manifest file, to finish an earlier job.
Progress and state live in ``DIR/.latentsky-manifest.sqlite``: running the
same command again after an interruption (even ``kill -9``) skips verified
files, resumes partial ones and retries failed ones.
``latentsky download --status DIR`` tells where a job stands.

Exit status: 0 when every file is in place, 1 when some failed (run the
command again to retry them), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

URL_COLUMNS = ("access_url", "accessurl", "url", "access_uri", "download_url", "href")
KEY_COLUMNS = ("key", "dp_id", "obs_publisher_did", "obs_id", "product_id", "id")
NAME_COLUMNS = ("filename", "file_name", "file")
SIZE_COLUMNS = ("size", "content_length", "size_bytes")  # exact sizes in bytes only (not ObsCore kB estimates)
SHA_COLUMNS = ("sha256", "checksum_sha256")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "download",
        help="download the files a table points to (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "table",
        nargs="?",
        type=Path,
        help="table with an access URL column, or a destination folder/manifest to resume",
    )
    p.add_argument("--dest", type=Path, help="destination folder (holds the manifest)")
    p.add_argument("--status", type=Path, metavar="DIR", help="report the state of the download job in DIR")
    p.add_argument("--url-column", help="name of the URL column (default: first of %s)" % ", ".join(URL_COLUMNS))
    p.add_argument(
        "--key-column",
        help="column of unique product keys (default: first of %s, else the URL)" % ", ".join(KEY_COLUMNS),
    )
    p.add_argument(
        "--name-column", help="column of file names (default: first of %s, else from the URL)" % ", ".join(NAME_COLUMNS)
    )
    p.add_argument(
        "--kind",
        choices=("auto", "fits", "any"),
        default="auto",
        help="'fits' files must open with astropy; 'auto': fits when the name says so",
    )
    p.add_argument("--auth", help="credential to send, e.g. 'eso' (LATENTSKY_ESO_TOKEN or keyring)")
    p.add_argument("--max-connections", type=int, help="concurrent transfers in all")
    p.add_argument("--max-connections-per-host", type=int, help="concurrent transfers per host")
    p.add_argument("--max-retries", type=int, help="attempts per file and run")
    p.add_argument("--timeout", type=float, help="seconds to wait to connect and between bytes")
    p.add_argument(
        "--verify",
        action="store_true",
        help="re-check files already done (size, checksum, FITS open), not only that they exist",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def items_from_table(
    path: Path,
    dest: Path,
    *,
    url_column: str | None = None,
    key_column: str | None = None,
    name_column: str | None = None,
    kind: str = "auto",
    auth: str | None = None,
) -> list:
    """Download items for the rows of a table file.

    Parameters
    ----------
    path : Path
        A table astropy can read.
    dest : Path
        Destination folder; every file lands directly inside it, under a
        sanitised name (a name in the table cannot escape the folder).
    url_column, key_column, name_column : str, optional
        Column names; found among common names when omitted.
    kind : {"auto", "fits", "any"}
        Verification kind; "auto" picks "fits" for ``.fits``/``.fit``/``.fts`` names.
    auth : str, optional
        Credential name for every item (e.g. ``"eso"``).

    Returns
    -------
    list of DownloadItem
    """
    from astropy.table import Table

    from latentsky.download import DownloadItem
    from latentsky.download.names import name_from_url, safe_join
    from latentsky.exceptions import LatentskyError

    try:
        table = Table.read(path, format="parquet") if path.suffix.lower() in (".parquet", ".pq") else Table.read(path)
    except Exception as err:
        raise LatentskyError(f"{path}: cannot read as a table ({type(err).__name__}: {err})") from err
    url_col = _column(table, url_column, URL_COLUMNS, path, "--url-column", required=True)
    key_col = _column(table, key_column, KEY_COLUMNS, path, "--key-column")
    name_col = _column(table, name_column, NAME_COLUMNS, path, "--name-column")
    size_col = _column(table, None, SIZE_COLUMNS, path, "")
    sha_col = _column(table, None, SHA_COLUMNS, path, "")
    items, names = [], {}
    for i, row in enumerate(table):
        url = _text(row[url_col])
        if not url:
            log.warning("%s: row %d has no URL in column %r; skipped", path, i, url_col)
            continue
        key = _text(row[key_col]) if key_col else url
        raw_name = _text(row[name_col]) if name_col else None
        name = safe_join(dest, raw_name or name_from_url(url, default=f"file-{i}")).name
        if name in names and names[name] != key:  # two products, one name: keep both
            name = _numbered(name, i)
        names[name] = key
        item_kind = (
            kind
            if kind != "auto"
            else ("fits" if name.lower().endswith((".fits", ".fit", ".fts", ".fits.gz", ".fits.fz")) else "any")
        )
        size = row[size_col] if size_col else None
        sha = _text(row[sha_col]) if sha_col else None
        try:
            items.append(
                DownloadItem(
                    key, url, dest / name, size=_int_or_none(size), sha256=sha or None, kind=item_kind, auth=auth
                )
            )
        except ValueError as err:
            raise LatentskyError(f"{path}, row {i}: {err}") from None
    return items


def _numbered(name: str, i: int) -> str:
    """``spec.fits`` -> ``spec-<i>.fits`` (``.fits.gz`` and the like kept whole)."""
    for ext in (".fits.gz", ".fits.fz", ".fits", ".fit", ".fts"):
        if name.lower().endswith(ext):
            return f"{name[: -len(ext)]}-{i}{name[-len(ext) :]}"
    stem, dot, ext = name.rpartition(".")
    return f"{stem}-{i}.{ext}" if dot else f"{name}-{i}"


def _column(table, wanted, candidates, path, option, required=False):
    from latentsky.exceptions import LatentskyError

    lower = {c.lower(): c for c in table.colnames}
    if wanted:
        if wanted not in table.colnames:
            raise LatentskyError(f"{path}: no column {wanted!r} ({option}); columns: {table.colnames}")
        return wanted
    for name in candidates:
        if name in lower:
            return lower[name]
    if required:
        raise LatentskyError(
            f"{path}: no URL column (looked for {', '.join(candidates)}); name it with "
            f"{option}; columns: {table.colnames}"
        )
    return None


def _text(value) -> str:
    import numpy as np

    if value is None or np.ma.is_masked(value):
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def _int_or_none(value):
    import numpy as np

    if value is None or np.ma.is_masked(value):
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def status(folder: Path) -> dict:
    """Counts per state, bytes done and the first errors of the job in ``folder``."""
    from latentsky.download.manifest import Manifest
    from latentsky.exceptions import LatentskyError

    if not Manifest.exists_in(folder):
        raise LatentskyError(f"{folder}: no download manifest here (run `latentsky download TABLE --dest {folder}`)")
    with Manifest.for_folder(folder) as m:
        rows = m.rows()
        counts = m.counts()
    partial = sum(1 for r in rows if r["state"] != "done" and Path(r["dest"] + ".part").exists())
    return {
        "folder": str(folder),
        "items": len(rows),
        "done": counts.get("done", 0),
        "pending": counts.get("pending", 0),
        "failed": counts.get("failed", 0),
        "partial_files": partial,
        "bytes_done": int(sum(r["bytes"] or 0 for r in rows if r["state"] == "done")),
        "errors": [
            {"key": r["key"], "error": r["last_error"], "attempts": r["attempts"]}
            for r in rows
            if r["state"] == "failed"
        ][:20],
    }


def run(args) -> int:
    from latentsky.download import DownloadManager
    from latentsky.download.manifest import MANIFEST_NAME, Manifest
    from latentsky.exceptions import LatentskyError
    from latentsky.progress import TqdmProgress

    if args.status is not None:
        st = status(args.status)
        if args.json:
            print(json.dumps(st))
        else:
            print(
                f"{st['folder']}: {st['done']}/{st['items']} done, {st['pending']} pending "
                f"({st['partial_files']} partly downloaded), {st['failed']} failed; "
                f"{st['bytes_done'] / 1e6:.1f} MB"
            )
            for e in st["errors"]:
                print(f"  {e['key']}: {e['error']} ({e['attempts']} attempts)")
        return 0
    if args.table is None:
        raise LatentskyError("give a TABLE (with --dest DIR) or --status DIR")
    source = args.table
    if source.is_dir() or source.name == MANIFEST_NAME:  # resume a job from its manifest alone
        folder = source if source.is_dir() else source.parent
        if not Manifest.exists_in(folder):
            raise LatentskyError(f"{folder}: no download manifest here")
        dest, items = args.dest or folder, None
    else:
        if args.dest is None:
            raise LatentskyError("--dest DIR is required with a TABLE")
        if not source.is_file():
            raise LatentskyError(f"{source}: no such table")
        dest = args.dest
        dest.mkdir(parents=True, exist_ok=True)
        items = items_from_table(
            source,
            dest.resolve(),
            url_column=args.url_column,
            key_column=args.key_column,
            name_column=args.name_column,
            kind=args.kind,
            auth=args.auth,
        )
    manager = DownloadManager(
        Manifest.for_folder(dest),
        max_connections=args.max_connections,
        max_connections_per_host=args.max_connections_per_host,
        max_retries=args.max_retries,
        timeout=args.timeout,
        progress=None if args.no_progress else TqdmProgress(),
    )
    try:
        results = manager.run(items, verify_existing=args.verify)
    except ValueError as err:  # two rows of the table are the same product, or would be the same file
        raise LatentskyError(f"{source}: {err} (name the columns with --key-column, --name-column)") from None
    if args.json:
        print(
            json.dumps(
                {
                    "done": len(results.done),
                    "skipped": len(results.skipped),
                    "failed": len(results.errors),
                    "bytes": results.bytes,
                    "elapsed_s": round(results.elapsed, 3),
                    "requests": results.requests,
                    "errors": [str(e) for e in results.errors],
                    "halted": results.halted,
                }
            )
        )
    else:
        print(results.summary())
        for failure in results.errors[:20]:
            print(f"  failed: {failure}", file=sys.stderr)
        if results.errors and not results.halted:
            print("run the same command again to retry the failed files", file=sys.stderr)
    if results.halted:
        print(
            f"latentsky download: stopped: {results.halted}\n  the verified files are kept in {dest}, partly "
            "downloaded ones resume where they stopped: free some space (or make the folder writable) and "
            "run the same command again",
            file=sys.stderr,
        )
    return 1 if results.errors or results.halted else 0
