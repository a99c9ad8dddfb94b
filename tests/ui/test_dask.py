"""Latent maps from Dask DataFrames: the same aggregate, taps, selections and hover as from pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("panel")
dd = pytest.importorskip("dask.dataframe")

from latentsky.ui.data import LatentData  # noqa: E402
from latentsky.ui.explore import Explore  # noqa: E402
from latentsky.viz import latent as vz  # noqa: E402


@pytest.fixture(scope="module")
def folder(synth_dir, tmp_path_factory):
    """The synthetic folder (20,000 rows derived from the sample), its table written as 7 row groups."""
    import shutil

    from latentsky.synth import LATENT_FILE

    out = tmp_path_factory.mktemp("dask") / "synth"
    shutil.copytree(synth_dir, out)
    pd.read_parquet(synth_dir / LATENT_FILE).to_parquet(out / LATENT_FILE, row_group_size=3000)
    return out


@pytest.fixture(scope="module")
def parquet(folder):
    from latentsky.synth import LATENT_FILE

    return folder / LATENT_FILE


@pytest.fixture(scope="module")
def both(folder):
    return LatentData.open(folder), LatentData.open(folder, dask=True)


def raster(table, color_by, x_range, y_range):
    """The RGBA image the map sends to the browser for this view."""
    img = vz.latent_map(table, color_by=color_by, width=200, height=150, x_range=x_range, y_range=y_range)[()]
    return np.asarray(img.data)


def test_dask_table_is_partitioned_and_indexed_by_row(both):
    pdata, ddata = both
    assert vz.is_dask(ddata.table) and ddata.table.npartitions == 7 and ddata.table.known_divisions
    assert len(ddata) == len(pdata) == 20_000
    assert list(vz.colour_columns(ddata.table)) == list(vz.colour_columns(vz.prepare_table(pdata.table)))
    pd.testing.assert_frame_equal(
        ddata.rows([3, 9000, 19_999]).drop(columns=vz.INDEX_COLUMN).reset_index(drop=True),
        pdata.table.iloc[[3, 9000, 19_999]].reset_index(drop=True),
        check_dtype=False,
        check_categorical=False,
    )


@pytest.mark.parametrize("color_by", ["count", "snr", "spec_class", "object"])
def test_dask_aggregate_equals_the_pandas_one(both, color_by):
    """Density, a column's mean, counts per class (few categories) and the category code (many: objects)."""
    pdata, ddata = both
    t = pdata.table
    (x0, x1), (y0, y1) = [(float(t[c].min()), float(t[c].max())) for c in ("x", "y")]
    for xr, yr in [((x0, x1), (y0, y1)), ((x0 / 3, x1 / 3), (y0 / 2, y1 / 3))]:  # the whole map, and a zoom
        a, b = raster(t, color_by, xr, yr), raster(ddata.table, color_by, xr, yr)
        assert a.shape == b.shape == (150, 200, 4) and (a[..., 3] > 0).sum() > 100
        np.testing.assert_array_equal(b, a)


def test_explore_on_dask_taps_selects_and_hovers_like_pandas(both):
    pdata, ddata = both
    ep, ed = Explore(pdata), Explore(ddata)
    t = pdata.table
    np.testing.assert_allclose(ed.data_bounds(), ep.data_bounds(), rtol=1e-12)
    for i in (0, 4321, 19_999):
        x, y = float(t["x"].iloc[i]), float(t["y"].iloc[i])
        assert ed.tap(x, y) == ep.tap(x, y)
        assert ed.hover_at(x, y) == ep.hover_at(x, y) is not None
        assert ed.hover_text() == ep.hover_text()
    assert ed.tap(1e9, 1e9) is None
    box = (
        float(t["x"].quantile(0.3)),
        float(t["y"].quantile(0.3)),
        float(t["x"].quantile(0.6)),
        float(t["y"].quantile(0.7)),
    )
    np.testing.assert_array_equal(ed.select_box(box), ep.select_box(box))
    assert len(ed.selection) > 100
    assert ed.export("csv") == ep.export("csv")
    xs, ys = [box[0], box[2], box[0]], [box[1], box[1], box[3]]
    np.testing.assert_array_equal(ed.select_lasso(xs, ys), ep.select_lasso(xs, ys))
    layer = ed._map_pane.object[()].get(1)
    assert layer.data[layer.vdims[0].name].values.any()  # the selection drawn over the Dask map
    spec = ddata.spectrum(int(ed.selection[0]))
    np.testing.assert_array_equal(spec["flux"], pdata.spectrum(int(ed.selection[0]))["flux"])


def test_text_columns_with_a_value_per_row_stay_text(parquet):
    table = dd.read_parquet(parquet)
    prepared = vz.prepare_table(table)
    assert not isinstance(prepared["id"].dtype, pd.CategoricalDtype)  # ids colour nothing: never categorized
    assert vz.prepare_table(prepared) is prepared
    with pytest.raises(KeyError, match="'y'"):
        vz.prepare_table(table.drop(columns="y"))
