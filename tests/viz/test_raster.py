"""Points per pixel and per category: the same counts as Datashader's, on one thread or several."""

import numpy as np
import pandas as pd
import pytest

from latentsky.viz import raster
from latentsky.viz.raster import count_points


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    n = 20_000
    x = rng.normal(size=n).astype("f4")
    y = rng.normal(size=n).astype("f4")
    x[:4] = [-1.0, 1.0, np.nan, 5.0]  # on both edges of the view, NaN, outside it
    y[:4] = [1.0, -1.0, 0.0, 0.0]
    cls = pd.Categorical(rng.choice(["a", "b", "c", None], n))  # None: code -1
    return pd.DataFrame({"x": x, "y": y, "cls": cls})


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_counts_equal_datashaders(points, threads, dtype, monkeypatch):
    import datashader as ds

    monkeypatch.setattr(raster, "MIN_POINTS_PER_THREAD", 1000)  # several slices even for a small table
    df = points.astype({"x": dtype, "y": dtype})
    for xr, yr, w, h in [((-1.0, 1.0), (-1.0, 1.0), 37, 23), ((-4.0, 4.5), (-3.5, 4.0), 120, 90)]:
        cvs = ds.Canvas(plot_width=w, plot_height=h, x_range=xr, y_range=yr)
        want = cvs.points(df, "x", "y", ds.count()).values
        got = count_points(df["x"].to_numpy(), df["y"].to_numpy(), xr, yr, w, h, threads=threads)
        assert got.dtype == want.dtype == np.uint32 and got.shape == (h, w)
        np.testing.assert_array_equal(got, want)
        want = cvs.points(df, "x", "y", ds.by("cls", ds.count())).values
        got = count_points(
            df["x"].to_numpy(), df["y"].to_numpy(), xr, yr, w, h, df["cls"].cat.codes.to_numpy(), 3, threads=threads
        )
        assert got.shape == (h, w, 3)
        np.testing.assert_array_equal(got, want)  # a missing class counts in the last one, as in Datashader


def test_bad_arguments_name_the_parameter():
    xs = np.zeros(3)
    with pytest.raises(ValueError, match="parameters xs, ys"):
        count_points(xs, np.zeros(4), (0, 1), (0, 1), 4, 4)
    with pytest.raises(ValueError, match="parameter codes"):
        count_points(xs, xs, (0, 1), (0, 1), 4, 4, np.zeros(2, "i1"), 2)
    with pytest.raises(ValueError, match="parameters x_range, y_range"):
        count_points(xs, xs, (1, 1), (0, 1), 4, 4)
