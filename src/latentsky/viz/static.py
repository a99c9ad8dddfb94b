"""Static (matplotlib) figures written by the command line: PNGs for reports and the README."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentsky.store import SpectrumStore


def plot_store_overview(store: SpectrumStore, out: Path, *, max_per_group: int = 6, max_rows: int = 2000) -> Path:
    """Write a PNG with two panels: example spectra per class, and the whole flux array as an image.

    Parameters
    ----------
    store : SpectrumStore
        An ingested store.
    out : Path
        PNG file to write.
    max_per_group : int
        Spectra drawn per class in the upper panel.
    max_rows : int
        At most this many spectra (evenly spaced in the sorted order) form the image, so
        the figure reads a bounded part of a large store.
    """
    from matplotlib.figure import Figure

    cat = store.catalog
    wave = store.wave
    order = cat.sort_values(["spec_class", "object", "mjd"]).index.to_numpy()
    order = order[:: max(1, -(-len(order) // max_rows))]

    def read(rows):
        rows = np.asarray(rows)
        ascending = np.argsort(rows)
        flux, weight = np.empty((len(rows), len(wave)), "f4"), np.empty((len(rows), len(wave)), "f4")
        flux[ascending] = store.flux.oindex[rows[ascending], :]
        weight[ascending] = store.weight.oindex[rows[ascending], :]
        return np.where(weight > 0, flux, np.nan)

    # a Figure of its own, not pyplot: the caller's backend (a notebook's inline plots) stays as it is
    fig = Figure(figsize=(11, 8))
    ax_lines, ax_image = fig.subplots(2, 1, height_ratios=[1.1, 1])
    ticks = [t for t in (3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000) if wave[0] <= t <= wave[-1]]
    offset = 0.0
    for colour, (cls, rows) in enumerate(cat.groupby("spec_class", sort=True)):
        for k, y in enumerate(read(rows.index[:max_per_group])):
            ax_lines.semilogx(
                wave, y + offset, lw=0.5, color=f"C{colour}", label=f"{cls} ({len(rows)})" if k == 0 else None
            )
            offset += 1.5
    ax_lines.set_xticks(ticks, [str(t) for t in ticks])
    ax_lines.set_xlabel("vacuum wavelength [Angstrom]")
    ax_lines.set_ylabel("normalised flux + offset")
    ax_lines.legend(loc="upper right", fontsize=8)
    ax_lines.set_title(f"{len(cat)} spectra on a {len(wave)}-pixel log-lambda grid")
    image = read(order)
    lo, hi = np.nanpercentile(image, [2, 98])
    # the grid is uniform in log(lambda): place the image on a log axis and label it in Angstrom
    ax_image.imshow(
        image,
        aspect="auto",
        interpolation="nearest",
        vmin=lo,
        vmax=hi,
        cmap="viridis",
        extent=[np.log10(wave[0]), np.log10(wave[-1]), len(order), 0],
    )
    ax_image.set_xticks(np.log10(ticks), [str(t) for t in ticks])
    ax_image.set_xlabel("vacuum wavelength [Angstrom]")
    ax_image.set_ylabel("spectrum (sorted by class, object, date)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    return out
