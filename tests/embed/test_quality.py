"""The stage-1 figures for metrics.json: persistence ratio and cross-prediction contrast, against
plain computations on real HARPS spectra."""

import numpy as np
import pytest

from latentsky.embed import ESNReadoutEmbedder, stage1_report
from latentsky.embed.quality import cross_prediction_ratios, persistence_ratios
from latentsky.embed.series import prepare_batch


def test_persistence_ratio_and_contrast_match_direct_computations(harps):
    flux, weight, cat = harps
    flux, weight = flux[:6], weight[:6]
    emb = ESNReadoutEmbedder(backend="numpy", state_dtype="float64").fit(flux, weight=weight)
    w, st = emb.transform_with_statistics(flux, weight)
    b = prepare_batch(flux, weight, offset=emb.offset_, washout=emb.washout, dtype="f8", bin_pixels=emb.bin_pixels)
    design = [np.hstack([emb.reservoir_.run(b.u[i]), np.ones((b.u.shape[1], 1))]) for i in range(6)]
    used = b.mask > 0

    def sse(i, readout):
        return np.sum((design[i][used[i]] @ readout - b.y[i, used[i]]) ** 2)

    persistence = [np.sum((b.y[i, used[i]] - (b.u[i, used[i]] + emb.offset_)) ** 2) for i in range(6)]
    ratio = persistence_ratios(st, w)
    np.testing.assert_allclose(ratio, [sse(i, w[i]) / persistence[i] for i in range(6)], rtol=1e-6)
    cross = cross_prediction_ratios(st, w, partners=3, seed=4)
    rng = np.random.default_rng(4)
    for k in range(3):
        other = (np.arange(6) + rng.integers(1, 6, size=6)) % 6
        assert np.all(other != np.arange(6))
        np.testing.assert_allclose(cross[:, k], [sse(i, w[j]) / sse(i, w[i]) for i, j in enumerate(other)], rtol=1e-5)
    report = stage1_report((st, w), partners=3, seed=4)
    assert report["persistence_ratio_median"] == pytest.approx(np.median(ratio))
    assert report["persistence_win_share"] == pytest.approx(np.mean(ratio < 1))
    assert report["cross_prediction_contrast"] == pytest.approx(np.median(cross))
    assert report["n_scored"] == 6


def test_report_from_an_embeddings_directory_reads_it_in_chunks(harps_store, tmp_path):
    from latentsky.embed.layout import open_embeddings
    from latentsky.embed.runner import embed_store

    out = embed_store(harps_store, tmp_path / "emb", n_units=20, backend="numpy")
    emb = open_embeddings(out)
    whole = stage1_report((emb.statistics(), emb.readout[:]))
    chunked = stage1_report(out, chunk_rows=7)
    assert chunked["n_scored"] == whole["n_scored"] == len(emb)
    assert chunked["persistence_ratio_median"] == pytest.approx(whole["persistence_ratio_median"])
    assert chunked["persistence_win_share"] == whole["persistence_win_share"]
    assert chunked["cross_prediction_contrast"] == pytest.approx(whole["cross_prediction_contrast"], rel=0.2)
    sampled = stage1_report(out, max_spectra=10)
    assert sampled["n_scored"] == 10
