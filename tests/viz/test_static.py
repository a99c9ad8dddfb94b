"""The overview PNG of a store reads a bounded number of rows."""

from __future__ import annotations

import zarr

from latentsky.viz.static import plot_store_overview


def test_overview_reads_at_most_max_rows(sample_store, tmp_path, monkeypatch):
    read = []
    original = zarr.Array.get_orthogonal_selection

    def counting(self, selection, *args, **kwargs):
        rows = selection[0] if isinstance(selection, tuple) else selection
        if not isinstance(rows, slice):
            read.append(len(rows))
        return original(self, selection, *args, **kwargs)

    monkeypatch.setattr(zarr.Array, "get_orthogonal_selection", counting)
    png = plot_store_overview(sample_store, tmp_path / "o.png", max_per_group=2, max_rows=10)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert read and max(read) <= 10


def test_figures_leave_the_callers_backend_alone(sample_store, tmp_path):
    """A notebook's inline backend survives the library's figures (matplotlib.use would switch it off)."""
    import matplotlib
    import pandas as pd

    from latentsky.pipeline import plot_map

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend: anything but Agg
    try:
        plot_store_overview(sample_store, tmp_path / "o.png", max_per_group=1, max_rows=5)
        table = pd.DataFrame(
            {
                "x": [0.0, 1.0, 2.0],
                "y": [1.0, 0.0, 2.0],
                "object": ["a", "a", "b"],
                "spec_class": ["STAR", "STAR", "QSO"],
            }
        )
        png = plot_map(table, tmp_path / "map.png")
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
