"""The Explore component driven by its parameters, no browser: map, colour, tap, selections, exports."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("panel")
hv = pytest.importorskip("holoviews")

from latentsky.ui.data import LatentData  # noqa: E402
from latentsky.ui.explore import Explore  # noqa: E402
from latentsky.viz import latent as vz  # noqa: E402


@pytest.fixture
def grid_data():
    """Nine labelled points on a 3x3 grid (x, y in {0, 1, 2})."""
    xs, ys = np.meshgrid([0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
    table = pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(9)],
            "x": xs.ravel(),
            "y": ys.ravel(),
            "object": ["a", "b", "c"] * 3,
            "snr": np.arange(9.0),
            "mjd": 55000.0 + np.arange(9),
            "ra": np.linspace(10, 20, 9),
            "dec": np.linspace(-5, 5, 9),
        }
    )
    return LatentData(table, label="grid")


def render(explore):
    """Render the current map with Bokeh (what a browser would receive) and return the figure."""
    return hv.render(explore._map_pane.object, backend="bokeh")


def test_map_offers_catalog_columns_and_defaults_to_a_category(sample_data):
    ex = Explore(sample_data)
    cols = ex.param.color_by.objects
    for c in ("count", "object", "mjd", "snr", "anomaly", "spec_class"):
        assert c in cols
    assert "path" not in cols and "id" not in cols  # one value per row colours nothing
    assert ex.color_by == "spec_class"
    for colour in ("snr", "object", "count", "spec_class"):
        ex.color_by = colour
        fig = render(ex)
        from bokeh.models import HoverTool

        assert fig.select_one(HoverTool) is not None
        assert ("<span" in ex.legend_html()) == (
            colour in ("object", "spec_class") and len(ex.table[colour].cat.categories) <= vz.MAX_CATEGORIES
        )


def test_million_points_rasterize_to_the_plot_size_only():
    """10^6 points: what goes to the browser is one RGBA image of width x height pixels."""
    import holoviews as hv
    from bokeh.models import ColorBar

    rng = np.random.default_rng(0)
    n = 1_000_000
    table = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "snr": rng.random(n)})
    dmap = vz.latent_map(table, color_by="snr", width=400, height=300)
    img = dmap[()]
    # the spread, rasterized and coloured element: 300 x 400 pixels whatever n is
    assert isinstance(img, hv.RGB)
    rgba = np.asarray(img.data)
    assert rgba.shape == (300, 400, 4) and rgba.dtype == np.uint8
    assert 1000 < (rgba[..., 3] > 0).sum() < rgba[..., 3].size  # points drawn, empty corners transparent
    # the colour bar spans the view's per-pixel means of snr: the aggregation really ran on the column
    bar = hv.render(dmap).select_one(ColorBar)
    assert 0 <= bar.color_mapper.low < 0.1 and 0.9 < bar.color_mapper.high < 1


def test_hover_names_the_row_drawn_under_the_pointer(sample_data):
    ex = Explore(sample_data)
    t = sample_data.table
    (x0, x1), (y0, y1) = ex.data_bounds()
    i = int(np.argmax(t["snr"].to_numpy()))
    assert ex.hover_at(float(t["x"].iloc[i]), float(t["y"].iloc[i])) is not None
    # the row found is drawn within a few pixels of the pointer
    j = ex.hovered
    px = (x1 - x0) / ex.width
    py = (y1 - y0) / ex.height
    assert abs(t["x"].iloc[j] - t["x"].iloc[i]) <= 4 * px and abs(t["y"].iloc[j] - t["y"].iloc[i]) <= 4 * py
    assert str(t["id"].iloc[j]) in ex.hover_text()
    far = ex.hover_at(x1 + 100, y1 + 100)
    assert far is None and "Point at the map" in ex.hover_text()


def test_tap_picks_the_nearest_point_and_shows_its_spectrum(sample_data):
    ex = Explore(sample_data)
    t = sample_data.table
    i = 17
    assert ex.tap(float(t["x"].iloc[i]), float(t["y"].iloc[i])) == i
    plot = ex._spectrum_pane.object
    curves = plot.values()
    assert [c.label.split(" (")[0] for c in curves] == ["spectrum", "PCA reconstruction from the latent point"]
    flux = np.asarray(sample_data.source.store.flux[int(t["row"].iloc[i])], dtype=float)
    shown = curves[0].dimension_values("flux")
    good = np.asarray(sample_data.source.store.weight[int(t["row"].iloc[i])]) > 0
    np.testing.assert_allclose(shown[good], flux[good], rtol=1e-6)
    assert np.isnan(shown[~good]).all()
    assert t["id"].iloc[i] in ex.status


def test_tap_far_from_every_point_selects_nothing(grid_data):
    ex = Explore(grid_data, tap_radius=5)
    assert ex.tap(0.5, 0.5) is None  # half a grid step is ~100 screen pixels here
    assert ex.tapped is None and "no spectrum" in ex.status
    assert ex.tap(1.001, 1.999) == 7


def test_box_and_lasso_selection_list_the_rows(grid_data):
    ex = Explore(grid_data)
    sel = ex.select_box((2.5, 0.5, 0.5, 2.5))  # corners in any order
    assert sel.tolist() == [4, 5, 7, 8]
    assert ex._sel_table.value["id"].tolist() == ["s4", "s5", "s7", "s8"]
    assert ex.status.startswith("4 selected")
    # a triangle holding (0,0), (1,0), (0,1) only
    sel = ex.select_lasso([-0.5, 1.6, -0.5], [-0.5, -0.5, 1.6])
    assert sel.tolist() == [0, 1, 3]
    ex.clear_selection()
    assert len(ex.selected) == 0
    with pytest.raises(ValueError, match="selection"):
        ex.export("csv")


def test_exports_round_trip(grid_data):
    from astropy.io import votable
    from astropy.table import Table

    ex = Explore(grid_data)
    ex.select_box((0.5, 0.5, 2.5, 2.5))
    csv = pd.read_csv(io.BytesIO(ex.export("csv")))
    assert csv["id"].tolist() == ["s4", "s5", "s7", "s8"]
    assert "_index" not in csv.columns
    np.testing.assert_allclose(csv["snr"], [4, 5, 7, 8])
    vot = votable.parse_single_table(io.BytesIO(ex.export("votable"))).to_table()
    assert [str(v) for v in vot["id"]] == ["s4", "s5", "s7", "s8"]
    assert str(vot["ra"].unit) == "deg"
    dl = Table.read(ex.export("download").decode(), format="ascii.ecsv")
    assert list(dl.colnames[:8]) == ["archive", "product_id", "object", "ra", "dec", "date", "instrument", "access_url"]
    assert dl["date"][0].startswith("2009-06-")  # MJD 55004
    with pytest.raises(ValueError, match="fmt"):
        ex.export("xlsx")


def test_download_table_of_sample_points_at_real_files(sample_data):
    from pathlib import Path
    from urllib.parse import urlparse

    from astropy.table import Table

    ex = Explore(sample_data)
    ex.select_box((-1e9, -1e9, 1e9, 1e9))
    dl = Table.read(ex.export("download").decode(), format="ascii.ecsv")
    assert len(dl) == len(sample_data.table)
    assert all(Path(urlparse(u).path).is_file() for u in dl["access_url"])


def test_range_set_from_outside_moves_the_map(grid_data):
    ex = Explore(grid_data)
    before = ex._map_pane.object
    ex.param.update(x_range=(0.5, 1.5), y_range=(0.5, 1.5))
    fig = render(ex)
    assert ex._map_pane.object is not before
    assert (fig.x_range.start, fig.x_range.end) == (0.5, 1.5)
    # a range coming from the plot itself (a zoom) is recorded, not redrawn
    current = ex._map_pane.object
    ex._on_plot_range(x_range=(0.0, 1.0), y_range=(0.0, 2.0))
    assert ex.x_range == (0.0, 1.0) and ex._map_pane.object is current


def test_synthetic_table_taps_regenerate_spectra(synth_dir):
    data = LatentData.from_synth(synth_dir)
    ex = Explore(data)
    assert len(ex.table) == 20_000
    i = int(np.argmax(data.table["snr"].to_numpy()))
    ex.tapped = i
    spec = data.spectrum(i)
    # the same row gives the same spectrum (noise seeded by the row)
    np.testing.assert_array_equal(spec["flux"], data.spectrum(i)["flux"])
    assert spec["title"].startswith(data.table["id"].iloc[i])
    assert len(ex._spectrum_pane.object.values()) == 2


def test_missing_coordinate_column_is_named():
    with pytest.raises(KeyError, match="'y'"):
        vz.prepare_table(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(KeyError, match="color_by"):
        vz.aggregator_for(pd.DataFrame({"x": [1.0], "y": [1.0]}), "nope")


def test_warm_up_compiles_once():
    vz.warm_up()
    # compiling takes ~10 s on these machines; a second warm-up only runs the compiled code (~0.2 s quiet,
    # well under 2 s on a loaded machine)
    assert vz.warm_up() < 2.0


def test_new_data_resets_view_tap_and_selection(grid_data, sample_data):
    ex = Explore(grid_data)
    ex.select_box((0.5, 0.5, 2.5, 2.5))
    ex.tap(1.0, 1.0)
    ex.param.update(x_range=(0.5, 1.5), y_range=(0.5, 1.5))
    ex.data = sample_data
    assert ex.x_range is None and ex.tapped is None and len(ex.selection) == 0
    assert len(ex.table) == len(sample_data.table)
    assert ex.color_by == "spec_class"


def test_linked_second_map_shares_the_selection(synth_dir):
    data = LatentData.from_synth(synth_dir)
    ex = Explore(data)
    assert ex.compare == ("rv", "tilt")  # the synthetic table's physical parameters beside the latent map
    fig = hv.render(ex._compare_pane.object, backend="bokeh")
    assert fig is not None and ex._compare_pane.visible
    # a box on the second map selects by its columns; the first map's selection layer shows the same rows
    sel = ex.select_box((0.0, -1.0, 1e6, 1.0), coords=("rv", "tilt"))
    t = data.table
    assert len(sel) == int(((t["rv"] >= 0) & (t["tilt"].abs() <= 1.0)).sum()) > 0
    layer = ex._map_pane.object[()].get(1)
    drawn = layer.data[layer.vdims[0].name].values
    assert drawn.any()  # selected points are drawn over the latent map
    ex.clear_selection()
    assert not isinstance(ex._map_pane.object[()], hv.Overlay)  # no selection, no layer
    # a tap on the second map picks a row by its rv, tilt
    i = int(sel[0])
    assert ex.tap(float(t["rv"].iloc[i]), float(t["tilt"].iloc[i]), coords=("rv", "tilt")) is not None


def test_no_second_map_without_its_columns(grid_data):
    ex = Explore(grid_data)
    assert ex.compare is None and ex._compare_pane.object is None
    ex.__panel__()


def test_pipeline_results_open_with_a_linked_pca_map(sample_store, tmp_path):
    t = sample_store.catalog[["id", "path", "object", "ra", "dec", "mjd"]].copy()
    rng = np.random.default_rng(0)
    t["x"], t["y"], t["anomaly"] = rng.normal(size=len(t)), rng.normal(size=len(t)), rng.random(len(t))
    t.to_parquet(tmp_path / "latent.parquet")
    data = LatentData.from_pipeline(tmp_path, store=sample_store)
    assert {"snr", "spec_class", "row", "pca_x", "pca_y"} <= set(data.table.columns)
    ex = Explore(data)
    assert ex.compare == ("pca_x", "pca_y")
    ex.tapped = 3
    np.testing.assert_array_equal(data.spectrum(3)["flux"], sample_store.flux[int(data.table["row"].iloc[3])])
