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
