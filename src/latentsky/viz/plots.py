"""The plots beside the map as HoloViews elements: one spectrum with its reconstruction, a row of image
cutouts, and the training loss curve."""

from __future__ import annotations

import numpy as np
import pandas as pd


def bokeh_backend():
    """Load HoloViews' Bokeh backend (options below are Bokeh options) without changing the current one."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401 - registers the backend and its options

    if hv.Store.current_backend is None:
        hv.Store.set_current_backend("bokeh")
    return hv


def spectrum_plot(
    wave,
    flux,
    *,
    weight=None,
    model=None,
    title: str = "",
    width: int = 700,
    height: int = 300,
    model_label: str = "reconstruction",
):
    """One spectrum as a HoloViews overlay, with its reconstruction drawn over it.

    Parameters
    ----------
    wave : array, Angstrom
        Wavelengths.
    flux : array
        Normalised flux.
    weight : array, optional
        Inverse variance; pixels with weight 0 (masked or off coverage) are not drawn.
    model : array, optional
        Reconstruction from the latent point, on the same grid.
    title : str
        Plot title (e.g. the spectrum id).

    Returns
    -------
    holoviews.Overlay
    """
    hv = bokeh_backend()
    wave = np.asarray(wave, dtype=float)
    flux = np.asarray(flux, dtype=float).copy()
    if weight is not None:
        flux[np.asarray(weight) <= 0] = np.nan
    curves = [
        hv.Curve((wave, flux), "wavelength", "flux", label="spectrum").opts(
            color="#1f77b4", line_width=1, backend="bokeh"
        )
    ]
    if model is not None:
        m = np.asarray(model, dtype=float)
        curves.append(
            hv.Curve((wave, m), "wavelength", "flux", label=model_label).opts(
                color="#d62728", line_width=1, alpha=0.8, backend="bokeh"
            )
        )
    return hv.Overlay(curves).opts(
        backend="bokeh",
        width=width,
        height=height,
        title=title,
        xlabel="wavelength (Angstrom)",
        ylabel="normalised flux",
        legend_position="top_right",
        show_grid=True,
    )


def empty_spectrum_plot(
    message: str = "Tap a point on the map to see its spectrum", *, width: int = 700, height: int = 300
):
    """A placeholder for the spectrum panel before the first tap."""
    hv = bokeh_backend()
    return hv.Overlay([hv.Curve([], "wavelength", "flux")]).opts(
        backend="bokeh",
        width=width,
        height=height,
        title=message,
        xlabel="wavelength (Angstrom)",
        ylabel="normalised flux",
    )


def cutout_plot(cutouts, *, size: int = 150):
    """Image cutouts one above the other, centred on the target, north up and east left (as the surveys' TAN
    images).

    Parameters
    ----------
    cutouts : sequence
        Objects with ``band``, ``image`` (H x W array, row 0 south) and ``pixel_scale`` (arcsec).
    size : int
        Width and height of each panel, screen pixels.

    Returns
    -------
    holoviews.Layout
        One greyscale image per band, its colour range clipped to the 1-99.5 percentiles (a
        bright source does not hide the field).
    """
    hv = bokeh_backend()
    panels = []
    for c in cutouts:
        # FITS row 0 is the south edge, an hv.Image's row 0 its top; columns already run east (left) to west
        img = np.flipud(np.asarray(c.image, dtype="f8"))
        h, w = img.shape
        half_w, half_h = w * c.pixel_scale / 2, h * c.pixel_scale / 2
        finite = img[np.isfinite(img)]
        lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
        panels.append(
            hv.Image(
                img, bounds=(-half_w, -half_h, half_w, half_h), kdims=["x (arcsec)", "y (arcsec)"], vdims=[c.band]
            ).opts(
                backend="bokeh",
                cmap="gray",
                clim=(float(lo), float(hi) if hi > lo else float(lo) + 1),
                width=size,
                height=size,
                title=f'{c.band} ({2 * half_w:.0f}")',
                xaxis=None,
                yaxis=None,
                toolbar=None,
            )
        )
    return hv.Layout(panels).cols(1).opts(backend="bokeh", shared_axes=False)


def loss_curve(losses: pd.DataFrame, *, width: int = 600, height: int = 260):
    """Training losses per epoch, log scale (the Train step's live curve).

    Parameters
    ----------
    losses : DataFrame
        Column ``epoch`` and one column per Keras log (``loss``, ``val_loss``, ``data_error``...);
        ``loss`` and ``val_loss`` are drawn.  Empty: an empty plot waiting for the first epoch.

    Returns
    -------
    holoviews.NdOverlay
        One curve per drawn log, keyed by ``series`` (so a stream can add ``val_loss`` later).
    """
    hv = bokeh_backend()
    names = [c for c in ("loss", "val_loss") if c in losses.columns] if not losses.empty else []
    opts = dict(
        backend="bokeh",
        width=width,
        height=height,
        logy=True,
        show_grid=True,
        xlabel="epoch",
        ylabel="loss",
        legend_position="top_right",
        framewise=True,
    )
    if not names:
        # one NaN point, no explicit limits: the axes then follow the data of later frames (framewise)
        empty = {"loss": hv.Curve((np.array([np.nan]), np.array([np.nan])), "epoch", "loss")}
        return hv.NdOverlay(empty, kdims="series").opts(title="loss (waiting for the first epoch)", **opts)
    curves = {
        c: hv.Curve((losses["epoch"].to_numpy(), losses[c].to_numpy()), "epoch", "loss").opts(
            backend="bokeh", line_width=2, framewise=True
        )
        for c in names
    }
    last = losses.iloc[-1]
    return hv.NdOverlay(curves, kdims="series").opts(
        title=f"epoch {int(last['epoch'])}: loss {last['loss']:.4g}", **opts
    )
