"""The latent map's frame: an RGBA image already coloured on the server, and its Bokeh plot.

Imported by :func:`latentsky.viz.latent.latent_map` (not at package import: it loads HoloViews).

Why a plot class of our own: HoloViews' ``RGBPlot.get_data`` takes an RGB element apart
channel by channel, stacks the channels again, checks the uint8 image for NaN and packs it
into uint32: a zoom at 10^6 points cost the server 22 ms with it, 14 ms without (bench/render.py's
``ours``, A/B in one process).
A :class:`MapFrame` holds the packed pixels already, so its plot hands them to Bokeh as they
are; everything else (tools, hooks, ranges, the glyph) is ``RGBPlot``'s.

Its update also skips HoloViews' freeze of the document's model graph: a new frame of the map
changes no model reference, and thawing recomputed the graph of the whole page on every zoom
(Bokeh walks every model: ~10 ms of CPU per zoom in the app, bench/render.py's scratch profile).
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
from holoviews.plotting.bokeh.element import ElementPlot
from holoviews.plotting.bokeh.raster import RGBPlot


def _held_function(method):
    """The function under HoloViews' ``hold_render`` decorator of ``method``, or None if it is not there."""
    cells = getattr(method, "__closure__", None) or ()
    inner = [c.cell_contents for c in cells if callable(c.cell_contents)]
    if len(inner) == 1 and getattr(inner[0], "__qualname__", "") == "ElementPlot.update_frame":
        return inner[0]
    return None


_UPDATE_FRAME = _held_function(ElementPlot.update_frame)


class MapFrame(hv.RGB):
    """An ``hv.RGB`` of uint8 RGBA pixels (h, w, 4), top row first, as :func:`latent_map` makes them."""


class MapFramePlot(RGBPlot):
    """``RGBPlot`` for a :class:`MapFrame`: its pixels go to Bokeh's ``image_rgba`` without a copy per channel."""

    def get_data(self, element, ranges, style):
        if self.static_source or self.invert_axes:
            return super().get_data(element, ranges, style)
        rgba = np.asarray(element.data)
        # Bokeh's image rows start at the bottom; one uint32 per pixel (R, G, B, A bytes)
        packed = np.ascontiguousarray(rgba[::-1]).view(np.uint32)[..., 0]
        left, bottom, right, top = element.bounds.lbrt()
        data = dict(image=[packed], x=[left], y=[bottom], dw=[right - left], dh=[top - bottom])
        return data, dict(image="image", x="x", y="y", dw="dw", dh="dh"), style

    def update_frame(self, key, ranges=None, plot=None, element=None):
        """HoloViews' update of the plot, with rendering held as it holds it, without freezing the document.

        Should an update add or remove models after all, Bokeh recomputes the graph
        as each change comes (nothing is missed; the freeze only batched that).
        """
        doc = self.state.document
        if _UPDATE_FRAME is None or doc is None:
            return super().update_frame(key, ranges, plot, element)
        hold = self.state.hold_render
        self.state.hold_render = True
        try:
            return _UPDATE_FRAME(self, key, ranges, plot, element)
        finally:
            self.state.hold_render = hold


hv.Store.register({MapFrame: MapFramePlot}, "bokeh")
