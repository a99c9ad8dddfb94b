"""Synthetic spectrum stores derived from the real sample, written chunk by chunk (the scale benchmark's input)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latentsky.synth import Templates, spectrum_for_row, write_spectra, write_synth


def test_store_rows_are_the_spectra_the_app_regenerates(synth_store):
    table = pd.read_parquet(synth_store.path.parent / "latent.parquet")
    templates = Templates.load(synth_store.path.parent)
    assert len(synth_store) == 1200 and synth_store.flux.shape == (1200, 4096)
    assert synth_store.chunk_rows == 100
    for row in (0, 99, 100, 777, 1199):
        flux, _, weight = spectrum_for_row(templates, table.iloc[row])
        assert np.array_equal(synth_store.flux[row], flux.astype("f4")), row
        assert np.array_equal(synth_store.weight[row], weight.astype("f4")), row
    cat = synth_store.catalog
    assert cat["id"].tolist() == table["id"].tolist()
    assert cat["row"].tolist() == list(range(1200))
    # derived from the sample: every template's class and instrument, Doppler shifts of tens of km/s
    assert set(cat["instrument"]) == {"HARPS", "BOSS", "SDSS"}
    assert set(cat["spec_class"]) == {"QSO", "STAR", "GALAXY"}
    assert 10 < table["rv"].std() < 60


def test_dask_writes_the_same_store(synth_store, tmp_path):
    from distributed import Client, LocalCluster

    folder = synth_store.path.parent
    table = pd.read_parquet(folder / "latent.parquet").iloc[:250]
    templates = Templates.load(folder)
    events = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        write_spectra(tmp_path / "store", templates, table, chunk_rows=100, client=client, progress=events.append)
    from latentsky.store import SpectrumStore

    store = SpectrumStore(tmp_path / "store")
    assert np.array_equal(store.flux[:], synth_store.flux[:250])
    assert np.array_equal(store.weight[:], synth_store.weight[:250])
    assert store.flux.chunks == (100, 4096)
    assert [e.done for e in events if e.task == "synth-spectra" and not e.finished] == [0, 100, 200, 250]


def test_bad_requests_are_refused(synth_store, tmp_path):
    from latentsky.exceptions import LatentskyError

    folder = synth_store.path.parent
    table = pd.read_parquet(folder / "latent.parquet")
    with pytest.raises(LatentskyError, match="first rows of a table"):
        write_spectra(tmp_path / "s", Templates.load(folder), table.iloc[10:20])
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="n_spectra: must be between 0 and n=5"):
        write_synth(tmp_path / "t", 5, store=folder / "store", n_spectra=6)
