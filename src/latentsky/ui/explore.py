"""Explore: the latent map, the spectrum of a tapped point, and the selection with its exports.

Every state a user can change is a parameter, so the logic is driven and
tested by setting them (``explore.select_box(...)``, ``explore.tap(...)``,
``explore.color_by = "snr"``) and the URL can hold the view
(:meth:`Explore.sync_url`).
"""

from __future__ import annotations

import html
import logging
import threading

import numpy as np
import pandas as pd
import panel as pn
import param

from latentsky.ui.data import LatentData
from latentsky.ui.export import EXPORT_FORMATS, export_bytes
from latentsky.ui.map_streams import attach_streams, selection_layer
from latentsky.viz import latent as vz

log = logging.getLogger(__name__)

RIGHT_MIN_WIDTH = 620
"""Narrowest the spectrum/selection column gets (CSS px); below it, it moves under the map instead (a
notebook at its normal width), so the spectrum keeps a readable axis (about 440 px beside the cutouts)."""

COMPARE_AUTO_MAX = 2_000_000
"""Tables up to this many rows get the linked second map automatically (see Explore.compare)."""

RANGE_DEBOUNCE_MS = None
"""HoloViews waits this long after the last view change before re-rendering (its default, 100 ms, polled
every 50 ms, is half the zoom-to-paint budget of 250 ms).  None: it renders 10 ms after the change; changes
that come in while a render runs are merged into the next one, so a long zoom still renders once per render
time (Datashader needs ~50 ms at 10^7 points).  BokehJS already holds changes back for
:data:`latentsky.viz.latent.LOD_TIMEOUT_MS`."""


def _tune_range_callbacks() -> None:
    from holoviews.plotting.bokeh.callbacks import RangeXYCallback

    RangeXYCallback.debounce = RANGE_DEBOUNCE_MS


class Explore(pn.viewable.Viewer):
    """The latent map of a :class:`LatentData`, with its linked spectrum and selection panels.

    Parameters
    ----------
    data : LatentData
        The table and its spectra.
    """

    data = param.ClassSelector(class_=LatentData, doc="The latent table and its spectra")
    color_by = param.Selector(default="count", objects=["count"], doc="Colour of the map: density or a column")
    x_range = param.Range(default=None, allow_None=True, doc="Visible x range of the map (kept in the URL)")
    y_range = param.Range(default=None, allow_None=True, doc="Visible y range of the map (kept in the URL)")
    tapped = param.Integer(
        default=None,
        allow_None=True,
        bounds=(0, None),
        doc="Row position of the spectrum shown (the last tapped point)",
    )
    selection = param.Array(default=np.empty(0, dtype=np.int64), doc="Row positions of the selected points")
    hover = param.Boolean(default=True, doc="Show the metadata of the point under the mouse")
    hovered = param.Integer(default=None, allow_None=True, doc="Row position of the spectrum under the mouse")
    max_listed = param.Integer(
        default=1000, bounds=(1, 100_000), doc="Selected rows listed in the table (exports hold them all)"
    )
    tap_radius = param.Number(
        default=10.0,
        bounds=(0, None),
        doc="A tap farther than this many screen pixels from every point selects nothing",
    )
    width = param.Integer(default=700, bounds=(100, 4000), doc="Map width in pixels")
    height = param.Integer(default=560, bounds=(100, 4000), doc="Map height in pixels")
    status = param.String(default="", doc="One line about the last action")
    cutout_status = param.String(default="", doc="One line about the tapped spectrum's image cutouts")
    compare = param.Tuple(
        default=None,
        allow_None=True,
        length=2,
        doc="Two columns drawn as a second map linked to the first (same colour and selection); "
        "default: pca_x/pca_y, else rv/tilt, when the table has them and at most "
        "COMPARE_AUTO_MAX rows",
    )

    def __init__(self, data: LatentData | None = None, **params):
        if data is None:
            data = LatentData.sample()
        _tune_range_callbacks()
        self._default_colour = "color_by" not in params
        super().__init__(data=data, **params)
        self._prepared: pd.DataFrame | None = None
        self._map_pane = pn.pane.HoloViews(
            sizing_mode="fixed", width=self.width + 90, height=self.height + 20, linked_axes=False
        )
        self._spectrum_pane = pn.pane.HoloViews(vz.empty_spectrum_plot(), sizing_mode="stretch_width", height=320)
        self._sel_table = pn.widgets.Tabulator(
            pd.DataFrame(),
            disabled=True,
            pagination="remote",
            page_size=8,
            show_index=False,
            height=290,
            sizing_mode="stretch_width",
        )
        self._compare_pane = pn.pane.HoloViews(sizing_mode="fixed", linked_axes=False, visible=False)
        self._cutout_pane = pn.pane.HoloViews(
            None, sizing_mode="fixed", linked_axes=False, css_classes=["explore-cutouts"]
        )
        self._cutout_thread: threading.Thread | None = None
        self._range_from_plot = False
        self._on_data()
        self.param.watch(lambda e: self._on_data(), "data")
        self.param.watch(lambda e: self._build_map(), ["color_by", "hover", "compare"])
        self.param.watch(self._on_range_param, ["x_range", "y_range"])
        self.param.watch(lambda e: self._show_spectrum(), "tapped")
        self.param.watch(lambda e: self._show_selection(), "selection")

    # ------------------------------------------------------------------ data and map
    @property
    def table(self):
        """The latent table as drawn (categoricals, plus the internal row column); pandas or Dask."""
        return self._prepared

    def _on_data(self) -> None:
        if self.data is None or self.data.table is None:
            raise ValueError("data: an Explore view needs a LatentData with a table")
        self._prepared = vz.prepare_table(self.data.table)
        self._bounds = {}
        self._pixels = vz.PixelIndex(self._prepared, self.width, self.height)
        if self.compare is None or not set(self.compare) <= set(self._prepared.columns):
            # beyond COMPARE_AUTO_MAX rows the second map is opt-in: it adds ~170 ms to each zoom of the
            # first at 10^7 (measured with bench/render.py), over the 250 ms zoom-to-paint budget
            pairs = [("pca_x", "pca_y"), ("rv", "tilt")] if len(self.data) <= COMPARE_AUTO_MAX else []
            with param.discard_events(self):
                self.compare = next((p for p in pairs if set(p) <= set(self._prepared.columns)), None)
        cols = vz.colour_columns(self._prepared)
        self.param.color_by.objects = cols
        if self.color_by not in cols or self._default_colour:
            default = next(
                (
                    c
                    for c in ("object", "spec_class", "cluster")
                    if c in cols
                    and vz.column_kind(self._prepared[c]) == "category"
                    and len(self._prepared[c].cat.categories) <= vz.MAX_CATEGORIES
                ),
                "count",
            )
            with param.discard_events(self):
                self.color_by = default
        with param.discard_events(self):
            # a new table: the old view, tap and selection mean nothing in it
            self.param.update(
                tapped=None, hovered=None, selection=np.empty(0, dtype=np.int64), x_range=None, y_range=None
            )
        self._build_map()
        self._show_spectrum()
        self._show_selection()

    def _selection_layer(self, coords):
        return selection_layer(self._prepared, self.selection, coords, self.width, self.height)

    def make_map(self):
        """The HoloViews map (latent map with the selection over it) for the current parameters, with its
        streams attached."""

        dmap = vz.latent_map(
            self._prepared,
            color_by=self.color_by,
            width=self.width,
            height=self.height,
            hover=self.hover,
            prepared=True,
            title=" · ".join(t for t in (self.data.label, self.data.map_name) if t),
        )
        xlim, ylim = self.x_range, self.y_range
        if xlim is None or ylim is None:
            xlim, ylim = self.data_bounds()
        # the selection layer only when something is selected: an empty layer still costs a rasterize per zoom
        overlay = dmap * self._selection_layer(vz.COORDS) if len(self.selection) else dmap
        overlay = overlay.opts(xlim=tuple(xlim), ylim=tuple(ylim), backend="bokeh")
        self._streams = attach_streams(
            dmap,
            on_tap=self.tap,
            on_box=self.select_box,
            on_lasso=self.select_lasso,
            on_range=self._on_plot_range,
            on_pointer=self.hover_at,
        )
        return overlay

    def make_compare_map(self):
        """The second map, on the :attr:`compare` columns, sharing colour and selection; or None."""

        if not self.compare:
            return None
        cx, cy = self.compare
        small = dict(width=self.width // 2 + 60, height=self.height // 2)
        dmap = vz.latent_map(
            self._prepared,
            color_by=self.color_by,
            coords=(cx, cy),
            hover=False,
            prepared=True,
            title=f"linked: {cx} vs {cy}",
            **small,
        )
        overlay = dmap * self._selection_layer((cx, cy)).opts(**small, backend="bokeh") if len(self.selection) else dmap
        self._compare_streams = attach_streams(
            dmap,
            on_tap=lambda x, y: self.tap(x, y, coords=(cx, cy)),
            on_box=lambda bounds: self.select_box(bounds, coords=(cx, cy)),
            on_lasso=lambda xs, ys: self.select_lasso(xs, ys, coords=(cx, cy)),
        )
        return overlay

    def data_bounds(self, pad: float = 0.05, *, coords=vz.COORDS) -> tuple[tuple[float, float], tuple[float, float]]:
        """x and y ranges holding every point, with ``pad`` (a fraction) added on each side."""
        key = tuple(coords)
        if key not in self._bounds:  # one pass per table (a parallel one for Dask), then cached
            self._bounds[key] = vz.column_bounds(self._prepared, key)
        out = []
        for lo, hi in self._bounds[key]:
            if not (np.isfinite(lo) and np.isfinite(hi)):
                lo, hi = 0.0, 1.0
            d = (hi - lo) or 1.0
            out.append((lo - pad * d, hi + pad * d))
        return out[0], out[1]

    def _build_map(self) -> None:
        self._map_pane.object = self.make_map()
        self._compare_pane.object = self.make_compare_map()
        self._compare_pane.visible = self.compare is not None

    # ------------------------------------------------------------------ actions (what the streams call)
    def _pixel_size(self) -> tuple[float, float]:
        bx, by = self.data_bounds()
        xr, yr = self.x_range or bx, self.y_range or by
        return max((xr[1] - xr[0]) / self.width, 1e-12), max((yr[1] - yr[0]) / self.height, 1e-12)

    def tap(self, x: float, y: float, *, coords=vz.COORDS) -> int | None:
        """Show the spectrum of the point nearest to ``(x, y)`` (in ``coords``, the latent map's by default).

        Returns the row position, or None when no point is within ``tap_radius`` pixels.
        """
        if tuple(coords) == vz.COORDS:
            sx, sy = self._pixel_size()
        else:
            (x0, x1), (y0, y1) = self.data_bounds(coords=coords)
            sx, sy = (x1 - x0) / (self.width // 2), (y1 - y0) / (self.height // 2)
        i = vz.nearest_point(
            self._prepared, x, y, coords=coords, x_scale=sx, y_scale=sy, max_distance=self.tap_radius or None
        )
        if i is None:
            self.status = f"no spectrum within {self.tap_radius:g} px of ({x:.3g}, {y:.3g})"
        self.tapped = i
        return i

    def select_box(self, bounds, *, coords=vz.COORDS) -> np.ndarray:
        """Select the points in ``bounds = (x0, y0, x1, y1)`` (of the map on ``coords``); returns their rows."""
        self.selection = vz.points_in_box(self._prepared, bounds, coords=coords)
        return self.selection

    def select_lasso(self, xs, ys, *, coords=vz.COORDS) -> np.ndarray:
        """Select the points inside the polygon with vertices ``(xs[i], ys[i])`` (of the map on ``coords``)."""
        self.selection = vz.points_in_polygon(self._prepared, xs, ys, coords=coords)
        return self.selection

    def clear_selection(self) -> None:
        self.selection = np.empty(0, dtype=np.int64)

    @property
    def selected(self) -> pd.DataFrame:
        """The selected rows of the latent table (all of them, in table order)."""
        return self.data.rows(self.selection)

    def export(self, fmt: str = "csv") -> bytes:
        """The selection as bytes: ``"csv"``, ``"votable"`` or ``"download"`` (ECSV for ``latentsky download``)."""
        if len(self.selection) == 0:
            raise ValueError("selection: nothing selected to export (draw a box or a lasso on the map)")
        return export_bytes(self.selected, fmt)

    def send_samp(self, **kwargs) -> str:
        """Send the selection to TOPCAT/Aladin over SAMP; the outcome goes to :attr:`status`."""
        from latentsky.ui.samp import send_table

        self.status = send_table(self.selected, **kwargs)
        return self.status

    def hover_at(self, x: float, y: float) -> int | None:
        """Set :attr:`hovered` to the spectrum drawn at ``(x, y)`` in the current view (None on empty space)."""
        if not self.hover:
            return None
        bx, by = self.data_bounds()
        self.hovered = self._pixels.lookup(x, y, self.x_range or bx, self.y_range or by)
        return self.hovered

    def _on_plot_range(self, x_range, y_range):
        self._range_from_plot = True
        try:
            self.param.update(x_range=tuple(float(v) for v in x_range), y_range=tuple(float(v) for v in y_range))
        finally:
            self._range_from_plot = False

    def _on_range_param(self, *_):
        # a range set from outside (the URL, a script) moves the plot; one coming from the plot does not loop back
        if not self._range_from_plot and self.x_range is not None and self.y_range is not None:
            self._build_map()

    # ------------------------------------------------------------------ views
    def spectrum_plot(self, spec: dict | None = None):
        """The HoloViews plot of the tapped spectrum (``spec``: :meth:`LatentData.spectrum`'s answer, read
        when not given), with its reconstruction when there is one; a placeholder before any tap."""
        if self.tapped is None:
            return vz.empty_spectrum_plot()
        spec = self.data.spectrum(self.tapped) if spec is None else spec
        if spec is None:
            row = self.data.row(self.tapped)
            return vz.empty_spectrum_plot(f"{row.get('id', self.tapped)}: no spectrum available")
        return vz.spectrum_plot(
            spec["wave"],
            spec["flux"],
            weight=spec.get("weight"),
            model=spec.get("model"),
            model_label=spec.get("model_label") or "reconstruction",
            title=spec.get("title", ""),
        )

    def _show_cutouts(self, i: int | None) -> None:
        """Fetch the images of row ``i`` in a thread (hips2fits may take a while) and show them."""
        if i is None or self.data.cutouts is None:
            self._cutout_pane.object, self.cutout_status = None, ""
            return
        self.cutout_status = "looking for image cutouts..."

        def work():
            try:
                images = self.data.images(i)
            except Exception as err:  # a failed image must not break the spectrum panel
                log.warning("cutouts of row %s: %s", i, err)
                images, why = [], f"no image cutout ({err})"
            else:
                why = "" if images else "no image cutout at this position"
            if self.tapped != i:  # another tap came meanwhile
                return
            self._cutout_pane.object = vz.cutout_plot(images) if images else None
            self.cutout_status = why or "image cutouts: " + ", ".join(c.band for c in images)

        self._cutout_thread = threading.Thread(target=work, daemon=True, name="latentsky-cutouts")
        self._cutout_thread.start()

    def wait_cutouts(self, timeout: float | None = 60) -> None:
        """Wait until the cutouts of the last tap are shown (tests, scripts)."""
        if self._cutout_thread is not None:
            self._cutout_thread.join(timeout)

    def hover_text(self) -> str:
        """Markdown line with the metadata of the hovered spectrum."""
        if self.hovered is None:
            return "Point at the map to see a spectrum's metadata; tap to see the spectrum."
        row = self.data.row(self.hovered)
        cols = vz.hover_columns(self.data.table, limit=9)
        parts = []
        for c in cols:
            v = row[c]
            if isinstance(v, (float, np.floating)):
                v = f"{v:.5g}"
            parts.append(f"**{c}** {v}")
        return " · ".join(parts)

    def legend_html(self) -> str:
        """What made the map (its kind, when known) and a colour key for categorical colouring (the
        raster's own colour bar covers numbers)."""
        items = vz.category_legend(self._prepared, self.color_by)
        known = self.data is not None and self.data.map_name
        kind = f'<div class="explore-map-kind"><b>map:</b> {html.escape(self.data.map_name)}</div>' if known else ""
        return kind + "".join(
            f'<span style="margin-right:10px"><span style="display:inline-block;width:10px;'
            f'height:10px;background:{c};margin-right:4px"></span>{name}</span>'
            for name, c in items
        )

    def _show_spectrum(self) -> None:
        spec = self.data.spectrum(self.tapped) if self.tapped is not None else None
        self._spectrum_pane.object = self.spectrum_plot(spec)
        if self.tapped is not None:
            row = self.data.row(self.tapped)
            self.status = f"showing {row.get('id', self.tapped)}" + (
                f" ({spec['model_error']})" if spec and spec.get("model_error") else ""
            )
        self._show_cutouts(self.tapped)

    def _show_selection(self) -> None:
        if self._prepared is not None and self._map_pane.object is not None:
            self._build_map()  # the selection layer over both maps
        sel = self.selected
        shown = sel.head(self.max_listed)
        cols = [c for c in vz.hover_columns(sel, limit=10)]
        self._sel_table.value = shown[cols].reset_index(drop=True) if len(cols) else shown.reset_index(drop=True)
        n = len(sel)
        self.status = f"{n:,} selected" + (f" (first {self.max_listed:,} listed)" if n > self.max_listed else "")

    def _download_button(self, fmt: str, label: str):
        import io

        def callback():
            try:
                return io.BytesIO(self.export(fmt))
            except ValueError as err:
                self.status = str(err)
                return io.BytesIO(b"")

        return pn.widgets.FileDownload(
            callback=callback,
            filename=f"selection{EXPORT_FORMATS[fmt]}",
            label=label,
            color="primary",
            css_classes=[f"export-{fmt}"],
            embed=False,
            width=150,
        )

    def sync_url(self) -> None:
        """Keep the colour, the view and the tapped spectrum in the page URL (call inside a served page)."""
        if pn.state.location is not None:
            pn.state.location.sync(self, {"color_by": "color", "x_range": "x", "y_range": "y", "tapped": "spectrum"})

    def __panel__(self):
        controls = pn.Row(
            pn.widgets.Select.from_param(self.param.color_by, label="Colour by", width=200),
            pn.widgets.Checkbox.from_param(self.param.hover, label="hover metadata"),
            pn.widgets.Button(label="Clear selection", on_click=lambda e: self.clear_selection(), width=140),
        )
        info = pn.pane.Markdown(
            param.bind(lambda data: f"**{len(data):,} spectra** · {data.label}", self.param.data),
            css_classes=["explore-info"],
        )
        hovered = pn.pane.Markdown(
            param.bind(lambda *_: self.hover_text(), self.param.hovered, self.param.data),
            css_classes=["explore-hover"],
            width=self.width + 60,
            height=45,
        )
        legend = pn.pane.HTML(
            param.bind(lambda *_: self.legend_html(), self.param.color_by, self.param.data),
            css_classes=["explore-legend"],
        )
        status = pn.pane.Markdown(self.param.status, css_classes=["explore-status"])
        exports = pn.FlexBox(
            self._download_button("csv", "CSV"),
            self._download_button("votable", "VOTable"),
            self._download_button("download", "Download table"),
            pn.widgets.Button(
                label="Send to TOPCAT/Aladin (SAMP)",
                width=220,
                css_classes=["samp-send"],
                on_click=lambda e: self.send_samp(),
            ),
        )
        cutouts = pn.Column(
            pn.pane.Markdown(self.param.cutout_status, css_classes=["explore-cutout-status"], width=170),
            self._cutout_pane,
            width=180,
        )
        left = pn.Column(info, controls, legend, self._map_pane, hovered, css_classes=["explore-map-column"])
        right = pn.Column(
            pn.Row(self._spectrum_pane, cutouts, sizing_mode="stretch_width"),
            status,
            self._sel_table,
            exports,
            self._compare_pane,
            sizing_mode="stretch_width",
            min_width=RIGHT_MIN_WIDTH,
            css_classes=["explore-spectrum-column"],
        )
        # side by side where the page is wide enough (panel serve, a wide notebook); the spectrum column
        # below the map in a notebook at its normal width, never squeezed beside it
        return pn.FlexBox(
            left,
            right,
            flex_wrap="wrap",
            align_items="flex-start",
            sizing_mode="stretch_width",
            css_classes=["latentsky-explore"],
        )
