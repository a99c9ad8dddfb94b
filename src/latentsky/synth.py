"""Large synthetic latent tables and spectra derived from the real sample.

A synthetic data set starts from real spectra (the templates, normally the
bundled sample's store) and draws any number of variants of them: each row
picks a template, a Doppler shift (radial velocity), a continuum change (a
linear tilt across the grid) and a signal-to-noise ratio.  Its latent point is
the template's own 2-D position (a PCA of the templates) moved along two
template-specific directions by the shift and the tilt, plus noise that grows
as the S/N falls, so the map has real structure: one cloud per template, with
the Doppler sequence running through it, and a few injected anomalies far
away.

Every spectrum is a deterministic function of its row (template, shift, tilt,
S/N and a per-row noise seed), so :func:`synth_spectrum` regenerates any of
10^7 rows on demand (the app's tap) without storing 10^7 spectra; ``n_spectra``
of them can also be written to a spectrum store for the pipeline.

Layout written by :func:`write_synth` (``latentsky synth``)::

    OUT/latent.parquet    id, path, object, ra, dec, mjd, x, y, anomaly, cluster, snr, rv, tilt,
                          template, spec_class, instrument, row
    OUT/templates.npz     wave (Angstrom), templates (k, n_pixels), coverage (k, n_pixels) bool
    OUT/templates.parquet the templates' catalog rows (id, object, spec_class...)
    OUT/store/            optional: the first n_spectra rows as a spectrum store
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from latentsky.exceptions import LatentskyError

log = logging.getLogger(__name__)

C_KMS = 299_792.458
SYNTH_KIND = "synth"
"""The output kind of a folder written by :func:`write_synth` (see :mod:`latentsky.store.output`)."""
LATENT_FILE = "latent.parquet"
TEMPLATES_FILE = "templates.npz"
TEMPLATE_CATALOG_FILE = "templates.parquet"
STORE_DIR = "store"


@dataclass
class Templates:
    """Template spectra on a common grid.

    Attributes
    ----------
    wave : ndarray (n_pixels,), Angstrom
    flux : ndarray (k, n_pixels)
        Continuum-normalised template flux, 1 where a template has no data.
    coverage : ndarray (k, n_pixels) of bool
        Where each template has data.
    catalog : DataFrame
        One catalog row per template (``id, object, spec_class, instrument, ra, dec, snr``...).
    """

    wave: np.ndarray
    flux: np.ndarray
    coverage: np.ndarray
    catalog: pd.DataFrame

    def __len__(self) -> int:
        return len(self.flux)

    def save(self, out: Path) -> None:
        """Write ``templates.npz`` and ``templates.parquet`` into ``out``."""
        np.savez_compressed(
            Path(out) / TEMPLATES_FILE, wave=self.wave, flux=self.flux.astype("f4"), coverage=self.coverage
        )
        self.catalog.to_parquet(Path(out) / TEMPLATE_CATALOG_FILE, index=False)

    @classmethod
    def load(cls, folder: Path) -> "Templates":
        """Read what :meth:`save` wrote in ``folder``."""
        folder = Path(folder)
        path = folder / TEMPLATES_FILE
        if not path.exists():
            raise LatentskyError(f"synth: {path} not found (not a folder written by latentsky synth)")
        with np.load(path) as z:
            wave, flux, coverage = z["wave"], z["flux"].astype("f8"), z["coverage"]
        return cls(wave, flux, coverage, pd.read_parquet(folder / TEMPLATE_CATALOG_FILE))


def templates_from_store(store, *, min_coverage: float = 0.2, max_templates: int | None = None) -> Templates:
    """Real spectra of a store as templates.

    Parameters
    ----------
    store : SpectrumStore
        Usually the bundled sample's store.
    min_coverage : float
        Spectra with data on less than this fraction of the grid are left out.
    max_templates : int, optional
        Keep at most this many (the first ones in catalog order).

    Raises
    ------
    LatentskyError
        When no spectrum of the store is usable.
    """
    flux = np.asarray(store.flux[:], dtype="f8")
    weight = np.asarray(store.weight[:], dtype="f8")
    cov = weight > 0
    keep = np.flatnonzero(cov.mean(axis=1) >= min_coverage)
    if max_templates is not None:
        keep = keep[:max_templates]
    if len(keep) == 0:
        raise LatentskyError(f"synth: no spectrum in {store.path} covers {min_coverage:.0%} of the grid")
    flux, cov = flux[keep], cov[keep]
    # Clip wild pixels (cosmic rays, bad sky subtraction) so shifted copies stay readable.
    flux = np.where(cov, np.clip(flux, -1.0, 5.0), 1.0)
    cat = store.catalog.iloc[keep].reset_index(drop=True)
    return Templates(np.asarray(store.wave, dtype="f8"), flux, cov, cat)


def _template_positions(templates: Templates) -> np.ndarray:
    """2-D positions of the templates: the first two principal components, unit variance."""
    X = templates.flux - templates.flux.mean(axis=0)
    u, s, _ = np.linalg.svd(X, full_matrices=False)
    xy = u[:, :2] * s[:2]
    if xy.shape[1] < 2:
        xy = np.column_stack([xy, np.zeros(len(xy))])
    return xy / np.maximum(xy.std(axis=0), 1e-12)


def synth_table(
    templates: Templates,
    n: int,
    *,
    seed: int = 0,
    rv_sigma: float = 30.0,
    tilt_sigma: float = 0.1,
    anomaly_fraction: float = 0.002,
    n_clusters: int = 8,
) -> pd.DataFrame:
    """A latent table of ``n`` synthetic spectra.

    Parameters
    ----------
    templates : Templates
        The real spectra the rows derive from.
    n : int
        Rows.
    seed : int
        Random seed; the same seed gives the same table.
    rv_sigma : float, km/s
        Spread of the Doppler shifts.
    tilt_sigma : float
        Spread of the continuum tilt (fractional change across the grid).
    anomaly_fraction : float
        Fraction of rows given an extreme shift/tilt and placed far from their template.
    n_clusters : int
        Number of groups of templates in the ``cluster`` column.

    Returns
    -------
    DataFrame
        Columns of the pipeline contract (``id, path, object, ra, dec, mjd, x, y, anomaly``) plus
        ``cluster, snr, rv, tilt, template, spec_class, instrument``.
    """
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    if anomaly_fraction < 0 or anomaly_fraction > 1:
        raise ValueError(f"anomaly_fraction: must be in [0, 1], got {anomaly_fraction}")
    rng = np.random.default_rng(seed)
    k = len(templates)
    base = _template_positions(templates)
    # each template's Doppler and tilt directions in the map: a random rotation per template
    angle = rng.uniform(0, 2 * np.pi, k)
    d_rv = np.column_stack([np.cos(angle), np.sin(angle)]) * 0.35
    d_tilt = np.column_stack([-np.sin(angle), np.cos(angle)]) * 0.2
    cat = templates.catalog
    t = rng.integers(0, k, n)
    rv = rng.normal(0.0, rv_sigma, n)
    tilt = rng.normal(0.0, tilt_sigma, n)
    tmpl_snr = np.nan_to_num(cat["snr"].to_numpy(dtype="f8"), nan=20.0) if "snr" in cat else np.full(k, 20.0)
    snr = np.clip(tmpl_snr[t] * rng.lognormal(0.0, 0.5, n), 2.0, 1000.0)
    anomalous = rng.random(n) < anomaly_fraction
    n_anom = int(anomalous.sum())
    rv[anomalous] = rng.choice([-1, 1], n_anom) * rng.uniform(8, 15, n_anom) * rv_sigma
    tilt[anomalous] = rng.choice([-1, 1], n_anom) * rng.uniform(5, 10, n_anom) * tilt_sigma
    u_rv, u_tilt = rv / rv_sigma, tilt / tilt_sigma
    noise = rng.normal(0.0, 1.0, (n, 2)) * (0.6 / np.sqrt(snr))[:, None]
    xy = base[t] + u_rv[:, None] * d_rv[t] + u_tilt[:, None] * d_tilt[t] + noise
    # anomaly: how far a row is from its template's centre, in units of the typical spread
    anomaly = np.sqrt(u_rv**2 + u_tilt**2) / np.sqrt(2)
    # clusters: templates grouped by position (nearest of n_clusters templates spread over the map)
    n_clusters = max(1, min(n_clusters, k))
    centres = base[np.linspace(0, k - 1, n_clusters).astype(int)]
    tmpl_cluster = np.argmin(((base[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    mjd = rng.uniform(51000.0, 60500.0, n)
    ra = (cat["ra"].to_numpy(dtype="f8")[t] + rng.normal(0, 0.01, n)) % 360.0
    dec = np.clip(cat["dec"].to_numpy(dtype="f8")[t] + rng.normal(0, 0.01, n), -90, 90)
    ids = (
        pd.Series(np.char.add("synth-", np.char.zfill(np.arange(n).astype(str), 8)), dtype="str")
        if n
        else pd.Series([], dtype="str")
    )

    def per_template(col, default=""):
        values = cat[col].astype(str).to_numpy() if col in cat else np.full(k, default)
        cats = pd.Index(values).unique()
        # from codes: building 10^7 strings first would cost seconds and gigabytes
        return pd.Categorical.from_codes(cats.get_indexer(values)[t], categories=cats)

    table = pd.DataFrame(
        {
            "id": ids,
            "path": pd.Categorical.from_codes(t, categories=pd.Index(["synth:" + str(i) for i in cat["id"]])),
            "object": per_template("object"),
            "ra": ra,
            "dec": dec,
            "mjd": mjd,
            "x": xy[:, 0].astype("f4"),
            "y": xy[:, 1].astype("f4"),
            "anomaly": anomaly.astype("f4"),
            "cluster": pd.Categorical.from_codes(tmpl_cluster[t], categories=[f"c{i}" for i in range(n_clusters)]),
            "snr": snr.astype("f4"),
            "rv": rv.astype("f4"),
            "tilt": tilt.astype("f4"),
            "template": t.astype("i4"),
            "spec_class": per_template("spec_class"),
            "instrument": per_template("instrument"),
            "row": np.arange(n, dtype="i8"),
        }
    )
    table.attrs["synth"] = {
        "seed": seed,
        "rv_sigma": rv_sigma,
        "tilt_sigma": tilt_sigma,
        "anomaly_fraction": anomaly_fraction,
        "n_templates": k,
    }
    return table


def synth_spectrum(templates: Templates, template: int, rv: float, tilt: float, snr: float, *, seed: int | None = 0):
    """One synthetic spectrum: a template Doppler-shifted, tilted and made noisy.

    Parameters
    ----------
    templates : Templates
    template : int
        Template index.
    rv : float, km/s
        Radial velocity; the spectrum is the template seen at ``wave * (1 + rv / c)``.
    tilt : float
        Fractional continuum change from the blue to the red end of the grid.
    snr : float
        Signal-to-noise ratio per pixel (noise sigma = 1 / snr on a unit continuum).
    seed : int or None
        Noise seed (the row number, so each row always gives the same spectrum); None: no noise.

    Returns
    -------
    flux, model, weight : ndarray (n_pixels,)
        Noisy flux, the noiseless model, and the inverse variance (0 off the template's coverage).
    """
    wave = templates.wave
    shifted = wave / (1.0 + rv / C_KMS)
    model = np.interp(shifted, wave, templates.flux[template])
    cover = np.interp(shifted, wave, templates.coverage[template].astype(float)) > 0.5
    span = (wave - wave[0]) / (wave[-1] - wave[0]) - 0.5
    model = model * (1.0 + tilt * span)
    sigma = 1.0 / max(float(snr), 1e-3)
    if seed is None:
        flux = model.copy()
    else:
        flux = model + np.random.default_rng(seed).normal(0.0, sigma, len(wave))
    weight = np.where(cover, 1.0 / sigma**2, 0.0)
    model = np.where(cover, model, np.nan)
    return flux, model, weight


def spectrum_for_row(templates: Templates, row: pd.Series | dict):
    """:func:`synth_spectrum` for one row of a table made by :func:`synth_table`."""
    return synth_spectrum(
        templates, int(row["template"]), float(row["rv"]), float(row["tilt"]), float(row["snr"]), seed=int(row["row"])
    )


def write_synth(
    out,
    n: int,
    *,
    store=None,
    n_spectra: int = 0,
    seed: int = 0,
    chunk_rows: int = 256,
    client=None,
    progress=None,
    **kwargs,
) -> Path:
    """Write a synthetic data set (see the module docstring for the layout).

    Parameters
    ----------
    out : path-like
        Output folder (created; its files are replaced when it is a folder ``write_synth`` wrote,
        see :func:`latentsky.store.output.check_output`; any other folder is refused).
    n : int
        Rows of the latent table.
    store : SpectrumStore or path, optional
        Where the templates come from; default: the bundled sample, ingested into a temporary folder.
    n_spectra : int
        Also write the first ``n_spectra`` rows' spectra as ``OUT/store`` (for the pipeline),
        chunk by chunk (see :func:`write_spectra`).
    chunk_rows : int
        Spectra per chunk of ``OUT/store``.
    client : distributed.Client, optional
        Compute the spectra on this Dask cluster (identical results).
    seed : int
        Random seed.
    progress : callable, optional
        Receives :class:`latentsky.progress.ProgressEvent` objects.
    **kwargs
        Passed to :func:`synth_table`.

    Returns
    -------
    Path
        ``out``.
    """
    from latentsky.progress import Progress
    from latentsky.store.output import output_folder

    out = Path(out)
    if n_spectra < 0 or n_spectra > n:
        raise ValueError(f"n_spectra: must be between 0 and n={n}, got {n_spectra}")
    store = _open_or_sample_store(store)
    with (
        output_folder(out, SYNTH_KIND, inputs=[store.path]),
        Progress("synth", total=3 + (n_spectra > 0), unit="steps", callback=progress) as p,
    ):
        templates = templates_from_store(store)
        p.advance(1, f"{len(templates)} templates")
        table = synth_table(templates, n, seed=seed, **kwargs)
        p.advance(1, f"{n} rows")
        templates.save(out)
        tmp = out / (LATENT_FILE + ".tmp")
        table.to_parquet(tmp, index=False, row_group_size=1_000_000)
        tmp.replace(out / LATENT_FILE)
        (out / "synth.json").write_text(
            json.dumps(
                {**table.attrs["synth"], "n": n, "n_spectra": n_spectra, "templates_from": str(store.path)}, indent=2
            )
        )
        p.advance(1, "latent table written")
        if n_spectra:
            write_spectra(
                out / STORE_DIR,
                templates,
                table.iloc[:n_spectra],
                chunk_rows=chunk_rows,
                client=client,
                progress=progress,
            )
            p.advance(1, f"{n_spectra} spectra written")
    log.info("synth: wrote %d rows to %s", n, out)
    return out


def _spectra_chunk(start: int, stop: int, params: dict, *, templates: Templates) -> tuple[int, np.ndarray, np.ndarray]:
    """Flux and weight (float32) of rows ``start:stop`` (in this process or on a Dask worker).

    ``params`` holds the table's ``template, rv, tilt, snr`` columns for those
    rows; row ``r``'s noise is seeded with ``r``, as :func:`spectrum_for_row`
    does, so the stored spectrum is the one the app regenerates on a tap.
    """
    k = stop - start
    flux = np.empty((k, len(templates.wave)), dtype="f4")
    weight = np.empty_like(flux)
    for i in range(k):
        f, _, w = synth_spectrum(
            templates,
            int(params["template"][i]),
            float(params["rv"][i]),
            float(params["tilt"][i]),
            float(params["snr"][i]),
            seed=start + i,
        )
        flux[i], weight[i] = f, w
    return start, flux, weight


def write_spectra(
    dest: Path, templates: Templates, table: pd.DataFrame, *, chunk_rows: int = 256, client=None, progress=None
) -> Path:
    """Materialise the spectra of the first rows of a synthetic table as a spectrum store, chunk by chunk.

    Parameters
    ----------
    dest : Path
        The store directory (written under a temporary name, moved into place when complete).
    templates : Templates
    table : DataFrame
        Rows ``0..len(table)-1`` of a table made by :func:`synth_table` (the
        row number seeds each spectrum's noise).
    chunk_rows : int
        Spectra per stored chunk and per task: memory holds a few chunks
        (4 MB each for 4,096 pixels), whatever the number of spectra.
    client : distributed.Client, optional
        Compute the chunks on this Dask cluster (identical results); this
        process writes them in order.
    progress : callable, optional
        Receives :class:`latentsky.progress.ProgressEvent` objects (task ``"synth-spectra"``).
    """
    from latentsky.distributed import map_ordered
    from latentsky.progress import Progress
    from latentsky.store.lineage import write_lineage
    from latentsky.store.spectra import SpectrumStoreWriter, atomic_directory

    if "row" in table and not np.array_equal(table["row"].to_numpy(), np.arange(len(table))):
        raise LatentskyError("synth: write_spectra needs the first rows of a table (row 0, 1, 2...)")
    n = len(table)
    cols = {c: table[c].to_numpy() for c in ("template", "rv", "tilt", "snr")}
    tasks = [(s, min(s + chunk_rows, n)) for s in range(0, n, chunk_rows)]

    def chunk_params():
        for s, e in tasks:
            yield s, e, {c: v[s:e] for c, v in cols.items()}

    with (
        atomic_directory(Path(dest), "spectra") as tmp,
        Progress("synth-spectra", total=n, unit="spectra", callback=progress) as bar,
    ):
        writer = SpectrumStoreWriter(tmp, templates.wave, n, chunk_rows=chunk_rows)
        results = map_ordered(_spectra_chunk, chunk_params(), client=client, common={"templates": templates})
        for start, flux, weight in results:
            writer.append_block(flux, weight)
            bar.advance(len(flux))
        cat = pd.DataFrame(
            {
                "id": table["id"].astype(str).to_numpy(),
                "path": table["path"].astype(str).to_numpy(),
                "instrument": table["instrument"].astype(str).to_numpy(),
                "object": table["object"].astype(str).to_numpy(),
                "ra": table["ra"].to_numpy(),
                "dec": table["dec"].to_numpy(),
                "mjd": table["mjd"].to_numpy(),
                "exptime": np.nan,
                "snr": table["snr"].to_numpy(dtype="f8"),
                "wave_min": templates.wave[0],
                "wave_max": templates.wave[-1],
                "sha256": "",
                "spec_class": table["spec_class"].astype(str).to_numpy(),
                "redshift": table["rv"].to_numpy(dtype="f8") / C_KMS,
                "format": "synth",
                "n_good_pixels": 0,
            }
        )
        writer.close(cat, attrs={"grid": {"synthetic": True}, "normalisation": "template (continuum-normalised)"})
        # a lineage key identifies the store to later steps without reading its catalog
        write_lineage(
            tmp,
            step="synth",
            params={"synth": table.attrs.get("synth", {}), "n_spectra": n},
            inputs={
                "templates": [str(i) for i in templates.catalog.get("id", [])],
                "ids": [str(table["id"].iloc[0]), str(table["id"].iloc[-1])] if n else [],
            },
        )
    return Path(dest)


def _open_or_sample_store(store):
    from latentsky.store import SpectrumStore

    if store is None:
        from latentsky.data import sample_store

        return sample_store()
    if isinstance(store, (str, Path)):
        return SpectrumStore(store)
    return store
