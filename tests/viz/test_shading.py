"""Server-side colouring of map rasters, against hand-computed pixels and Datashader's equalisation."""

import numpy as np
import pytest

from latentsky.viz.shading import LEVELS, lookup_table, shade_categories, shade_values

GREY = ["#000000", "#ffffff"]


def test_lookup_table_spreads_the_palette_and_ends_with_a_transparent_entry():
    lut = lookup_table(GREY, min_alpha=40)
    assert lut.shape == (LEVELS + 1, 4) and lut.dtype == np.uint8
    assert lut[0].tolist() == [0, 0, 0, 40]
    assert lut[51].tolist() == [51, 51, 51, round(40 + 215 * 51 / 255)]
    assert lut[255].tolist() == [255, 255, 255, 255]
    assert lut[LEVELS].tolist() == [0, 0, 0, 0]


def test_counts_are_equalised_by_their_histogram():
    lut = lookup_table(GREY)
    counts = np.array([[0, 1], [2, 4]], dtype="u4")
    rgba, span = shade_values(counts, lut, how="eq_hist")
    # non-zero counts 1, 2, 4 once each: cumulative 1/3, 2/3, 1, spread to 0, 0.5, 1 of the palette
    assert rgba[0, 0].tolist() == [0, 0, 0, 0]
    assert rgba[0, 1].tolist() == lut[0].tolist()
    assert rgba[1, 0].tolist() == lut[128].tolist()  # 0.5 * 255 = 127.5 rounds to 128
    assert rgba[1, 1].tolist() == lut[255].tolist()
    assert span == (1.0, 4.0)


def test_equalisation_matches_datashaders_eq_hist():
    import datashader.transfer_functions as tf

    lut = lookup_table(GREY)
    counts = np.random.default_rng(0).poisson(np.random.default_rng(1).exponential(4, (60, 80))).astype("u4")
    rgba, _ = shade_values(counts, lut, how="eq_hist")
    shown = counts > 0
    level = tf.eq_hist(counts[shown])[0]
    want = np.rint((level - level.min()) / (level.max() - level.min()) * 255)
    np.testing.assert_array_equal(rgba[shown][:, 0], want)
    assert (rgba[~shown] == 0).all()


def test_values_are_spread_linearly_and_nan_is_transparent():
    lut = lookup_table(GREY)
    rgba, span = shade_values(np.array([[np.nan, 0.0], [0.5, 1.0]]), lut)
    assert rgba[0, 0].tolist() == [0, 0, 0, 0]
    assert [rgba[0, 1, 0], rgba[1, 0, 0], rgba[1, 1, 0]] == [0, 128, 255]
    assert span == (0.0, 1.0)
    flat, span = shade_values(np.full((2, 2), 3.0), lut)  # one value: the top of the palette
    assert (flat[..., 0] == 255).all() and span == (3.0, 3.0)
    empty, span = shade_values(np.full((2, 2), np.nan), lut)
    assert not empty.any() and np.isnan(span).all()


def test_categories_mix_their_colours_by_count():
    counts = np.array([[[0, 0], [1, 0]], [[1, 1], [0, 3]]], dtype="u4")
    rgba = shade_categories(counts, ["#ff0000", "#0000ff"])
    assert rgba[0, 0].tolist() == [0, 0, 0, 0]
    assert rgba[0, 1].tolist() == [255, 0, 0, 255]
    assert rgba[1, 0].tolist() == [128, 0, 128, 255]  # half red, half blue: 127.5 rounds to 128
    assert rgba[1, 1].tolist() == [0, 0, 255, 255]


def test_bad_rasters_name_the_parameter():
    lut = lookup_table(GREY)
    with pytest.raises(ValueError, match="parameter values: eq_hist shades counts"):
        shade_values(np.ones((2, 2)), lut, how="eq_hist")
    with pytest.raises(ValueError, match="parameter values: expected a 2-D raster"):
        shade_values(np.ones(4), lut)
    with pytest.raises(ValueError, match="parameter how='log'"):
        shade_values(np.ones((2, 2)), lut, how="log")
    with pytest.raises(ValueError, match=r"parameter counts: expected shape \(h, w, 2\)"):
        shade_categories(np.ones((2, 2, 3)), ["#ff0000", "#0000ff"])


def test_a_map_frame_reaches_bokeh_as_holoviews_own_rgb_plot_sends_it():
    import holoviews as hv

    from latentsky.viz.frames import MapFrame

    hv.extension("bokeh", logo=False)
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)  # top row first
    bounds = (-1.0, 2.0, 3.0, 4.5)

    def sent(element):
        fig = hv.render(element)
        (source,) = [r.data_source for r in fig.renderers if "image" in r.data_source.data]
        return {k: np.asarray(v[0]) for k, v in source.data.items()}

    ours, theirs = sent(MapFrame(rgba, bounds=bounds)), sent(hv.RGB(rgba, bounds=bounds))
    assert ours["image"].dtype == theirs["image"].dtype == np.uint32
    np.testing.assert_array_equal(ours["image"], theirs["image"])
    assert {k: float(ours[k]) for k in ("x", "y", "dw", "dh")} == {k: float(theirs[k]) for k in ("x", "y", "dw", "dh")}


def test_a_zoom_updates_the_image_without_recomputing_the_documents_models(monkeypatch):
    import bokeh.document.models as bdm
    import holoviews as hv
    import pandas as pd
    from bokeh.document import Document

    from latentsky.viz.latent import latent_map

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"x": rng.normal(size=5000), "y": rng.normal(size=5000), "snr": rng.random(5000)})
    plot = hv.renderer("bokeh").get_plot(latent_map(table, color_by="snr", width=60, height=40))
    doc = Document()
    doc.add_root(plot.state)
    (source,) = [r.data_source for r in plot.state.renderers if "image" in r.data_source.data]
    before = np.array(source.data["image"][0])
    recomputed = []
    real = bdm.DocumentModelManager.recompute
    monkeypatch.setattr(bdm.DocumentModelManager, "recompute", lambda self: recomputed.append(1) or real(self))
    ranges = [s for s in plot.streams if isinstance(s, hv.streams.RangeXY)]
    for s in ranges:
        s.update(x_range=(-0.5, 0.5), y_range=(-0.5, 0.5))
    hv.streams.Stream.trigger(ranges)
    after = np.array(source.data["image"][0])
    assert after.shape == before.shape and not np.array_equal(after, before)  # the zoomed image reached Bokeh
    assert source.data["x"] == [-0.5] and source.data["dw"] == [1.0]
    # (HoloViews' update froze the document's models and walked all of them again when it thawed)
    assert recomputed == []
    assert plot.state in doc.roots and all(m.document is doc for m in plot.state.references())
