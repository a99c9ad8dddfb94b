"""The latent map's frame: an RGBA image already coloured on the server, and its Bokeh plot.

Imported by :func:`latentsky.viz.latent.latent_map` (not at package import: it loads HoloViews).

Why a plot class of our own: HoloViews' ``RGBPlot.get_data`` takes an RGB element apart
channel by channel, stacks the channels again, checks the uint8 image for NaN and packs it
into uint32: a zoom at 10^6 points cost the server 22 ms with it, 14 ms without (bench/render.py's
``ours``, A/B in one process).
A :class:`MapFrame` holds the packed pixels already, so its plot hands them to Bokeh as they
are; everything else (tools, hooks, ranges, the glyph) is ``RGBPlot``'s.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
from holoviews.plotting.bokeh.raster import RGBPlot


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


hv.Store.register({MapFrame: MapFramePlot}, "bokeh")
