"""Every score of latentsky.evaluate against values worked out by hand on tiny inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latentsky import evaluate as ev
from latentsky.embed.esn import ReadoutStatistics
from latentsky.exceptions import AutoencoderError

# Points on a line and their labels.  Nearest other point (ties to the lower index):
#   0 -> 1 (a=a), 1 -> 0 (tie with 2; a=a), 2 -> 1 (b!=a), 3 -> 4 (b=b), 4 -> 3 (b=b), 5 -> 4 (c: single)
LINE = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [30.0]])
LABELS = ["a", "a", "b", "b", "b", "c"]


def test_neighbours_break_ties_by_index():
    assert ev.neighbours(LINE, 1)[:, 0].tolist() == [1, 0, 1, 4, 3, 4]
    assert ev.neighbours(LINE, 2).tolist() == [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2], [4, 3]]


def test_knn_purity_k1_by_hand():
    # c is observed once: not scored.  Scored: 1, 1, 0, 1, 1 -> 4/5
    assert ev.knn_purity(LINE, LABELS, k=1) == pytest.approx(4 / 5)
    # scoring every point: 4/6
    assert ev.knn_purity(LINE, LABELS, k=1, repeated_only=False) == pytest.approx(4 / 6)


def test_knn_purity_k2_by_hand():
    # 0: {1 a, 2 b} 1/2; 1: {0 a, 2 b} 1/2; 2: {1 a, 0 a} 0; 3: {4 b, 2 b} 1; 4: {3 b, 2 b} 1
    assert ev.knn_purity(LINE, LABELS, k=2) == pytest.approx((0.5 + 0.5 + 0 + 1 + 1) / 5)


def test_knn_purity_missing_labels_never_match_and_are_not_scored():
    labels = ["a", "a", None, None, np.nan, "c"]
    # only 0 and 1 are scored (a twice); 0 -> 1 match, 1 -> 0 match
    assert ev.knn_purity(LINE, labels, k=1) == 1.0
    # 3 -> 4 are both missing: they are not a match when scoring every point
    assert ev.knn_purity(LINE, labels, k=1, repeated_only=False) == pytest.approx(2 / 3)
    assert np.isnan(ev.knn_purity(LINE, ["a", "b", "c", "d", "e", "f"], k=1))


def test_knn_purity_errors_name_the_parameter():
    with pytest.raises(AutoencoderError, match="parameter k"):
        ev.knn_purity(LINE, LABELS, k=6)
    with pytest.raises(AutoencoderError, match="parameter labels"):
        ev.knn_purity(LINE, LABELS[:3], k=1)
    with pytest.raises(AutoencoderError, match="parameter Z"):
        ev.knn_purity(np.array([[np.nan], [1.0]]), ["a", "a"], k=1)


# Data X on a line; the map Z swaps points 1 and 2.
#   nearest in Z: 0->2, 1->2, 2->0, 3->1, 4->3, whose ranks in X are 2, 2, 2, 2, 1
#   T = 1 - 2 / (n k (2n - 3k - 1)) * sum(rank - k) = 1 - 2 / (5 * 1 * 6) * 4 = 11/15
#   nearest in X: 0->1, 1->0, 2->1, 3->2, 4->3, whose ranks in Z are 2, 2, 2, 2, 1: C = 11/15 too
X_LINE = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]])
Z_SWAP = np.array([[0.0], [3.0], [1.0], [7.0], [15.0]])


def test_trustworthiness_and_continuity_by_hand():
    assert ev.trustworthiness(X_LINE, Z_SWAP, k=1) == pytest.approx(11 / 15)
    assert ev.continuity(X_LINE, Z_SWAP, k=1) == pytest.approx(11 / 15)
    assert ev.trustworthiness(X_LINE, 2 * X_LINE + 1, k=2) == pytest.approx(1.0)


def test_trustworthiness_and_continuity_differ_when_the_map_tears():
    # X at 0, 1, 3, 7, 15, 31, 63 (distinct distances, no ties); the map moves point 6 to 2.5,
    # between points 1 and 2.
    X = np.array([[0.0], [1.0], [3.0], [7.0], [15.0], [31.0], [63.0]])
    Z = X.copy()
    Z[6] = 2.5
    # nearest in Z: 0->1, 1->0, 2->6, 3->2, 4->3, 5->4, 6->2; ranks in X: 1, 1, 6, 1, 1, 1, 4
    # T = 1 - 2 / (n k (2n - 3k - 1)) * sum(rank - k) = 1 - 2 / (7 * 10) * (5 + 3) = 27/35
    assert ev.trustworthiness(X, Z, k=1) == pytest.approx(27 / 35)
    # nearest in X: 0->1, 1->0, 2->1, 3->2, 4->3, 5->4, 6->5; ranks in Z: 1, 1, 2, 1, 1, 1, 6
    # C = 1 - 2 / 70 * (1 + 5) = 29/35
    assert ev.continuity(X, Z, k=1) == pytest.approx(29 / 35)


# One spectrum with M = 2: G = [[2, 1], [1, 3]], h = [1, 2], c = y'y = 5, 4 steps.
#   sse(w) = w'Gw - 2 w'h + c
#   w = [1, 0]: 2 - 2 + 5 = 5          w = [0, 1]: 3 - 4 + 5 = 4
#   w* = G^-1 h = [1, 3] / 5 = [0.2, 0.6]: 0.2*1 + 0.6*2 = 1.4 -> sse = 5 - 1.4 = 3.6
STATS = ReadoutStatistics(
    np.array([[[2.0, 1.0], [1.0, 3.0]]] * 2), np.array([[1.0, 2.0]] * 2), np.array([5.0, 5.0]), np.array([4, 4])
)


def test_reconstruction_error_by_hand():
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(ev.reconstruction_error(STATS, w, per="sum"), [5.0, 4.0])
    np.testing.assert_allclose(ev.reconstruction_error(STATS, w), [5 / 4, 1.0])
    np.testing.assert_allclose(ev.reconstruction_error(STATS, w, per="energy"), [1.0, 0.8])
    with pytest.raises(AutoencoderError, match="parameter per"):
        ev.reconstruction_error(STATS, w, per="pixel")
    with pytest.raises(AutoencoderError, match="parameter readouts"):
        ev.reconstruction_error(STATS, w[:1])


def test_anomaly_scores_by_hand():
    best = np.array([[0.2, 0.6], [0.2, 0.6]])
    rec = np.array([[1.0, 0.0], [0.2, 0.6]])
    # (5 - 3.6) / 4 = 0.35 for the first, 0 for the perfect reconstruction
    np.testing.assert_allclose(ev.anomaly_scores(STATS, rec, best), [0.35, 0.0], atol=1e-12)


# Four spectra of 20 pixels: 0 a line, 1 the same line x 3 (a scaled copy), 2 a different shape,
# 3 valid only on 10 pixels that 0 and 1 lack (nothing shared with them).
PIX = np.arange(20.0)
FLUX = np.array([1 + 0.1 * PIX, 3 * (1 + 0.1 * PIX), 1 + np.sin(PIX), 1 + 0.1 * PIX])
WEIGHT = np.ones_like(FLUX)
WEIGHT[:2, 10:] = 0.0
WEIGHT[3, :10] = 0.0


def relative_residual(f, g):
    a = f @ g / (g @ g)
    return np.linalg.norm(f - a * g) / np.linalg.norm(f)


def test_flux_distances_take_the_best_scale_on_shared_pixels(monkeypatch):
    monkeypatch.setattr(ev, "MIN_SHARED_PIXELS", 5)
    d = ev.flux_distances(FLUX, WEIGHT)
    assert d[0, 1] == pytest.approx(0.0, abs=1e-12) and d[1, 0] == pytest.approx(0.0, abs=1e-12)  # scale only
    # 0 and 2 share pixels 0..9: the residual of the best multiple of 2 on them, relative to 0 there
    assert d[0, 2] == pytest.approx(relative_residual(FLUX[0, :10], FLUX[2, :10]))
    assert d[2, 0] == pytest.approx(relative_residual(FLUX[2, :10], FLUX[0, :10]))
    assert d[0, 3] == 1.0 and d[3, 1] == 1.0  # no shared pixel
    assert d[2, 3] == pytest.approx(relative_residual(FLUX[2, 10:], FLUX[3, 10:]))
    monkeypatch.setattr(ev, "MIN_SHARED_PIXELS", 11)
    assert ev.flux_distances(FLUX, WEIGHT)[0, 2] == 1.0  # 10 shared pixels are too few
    np.testing.assert_allclose(ev.flux_distances(FLUX, WEIGHT, rows=[2])[0], ev.flux_distances(FLUX, WEIGHT)[2])


def test_neighbour_resemblance_is_the_median_residual_to_the_map_neighbour(monkeypatch):
    monkeypatch.setattr(ev, "MIN_SHARED_PIXELS", 5)
    d = ev.flux_distances(FLUX, WEIGHT)
    # map neighbours: 0 <-> 1 and 2 <-> 3
    Z = np.array([[0.0], [0.1], [5.0], [5.2]])
    per = ev.neighbour_resemblance(Z, FLUX, WEIGHT, per_spectrum=True)
    np.testing.assert_allclose(per, [d[0, 1], d[1, 0], d[2, 3], d[3, 2]], atol=1e-12)
    assert ev.neighbour_resemblance(Z, FLUX, WEIGHT) == pytest.approx(np.median(per))
    # pairing each line with the sine instead resembles less
    worse = np.array([[0.0], [5.1], [0.1], [5.2]])
    assert ev.neighbour_resemblance(worse, FLUX, WEIGHT) > ev.neighbour_resemblance(Z, FLUX, WEIGHT)
    with pytest.raises(AutoencoderError, match="parameters Z and flux"):
        ev.neighbour_resemblance(Z[:3], FLUX, WEIGHT)


def test_trust_data_uses_the_symmetrised_flux_distances():
    d = np.array(
        [
            [0, 1, 4, 9, 16, 25],
            [1, 0, 1, 4, 9, 16],
            [4, 1, 0, 1, 4, 9],
            [9, 4, 1, 0, 1, 4],
            [16, 9, 4, 1, 0, 1],
            [25, 16, 9, 4, 1, 0],
        ],
        dtype="f8",
    )
    line = np.arange(6.0)[:, None]
    assert ev.trust_data(line, None, distances=d, k=2) == pytest.approx(1.0)
    # a map that matches the distances as well as sklearn's trustworthiness of the points themselves
    swapped = line[[0, 2, 1, 3, 4, 5]]
    assert ev.trust_data(swapped, None, distances=d, k=1) == pytest.approx(ev.trustworthiness(line, swapped, k=1))
    # an asymmetric distance is symmetrised first
    skew = d.copy()
    skew[0, 1], skew[1, 0] = 0.0, 2.0
    assert ev.trust_data(swapped, None, distances=skew, k=1) == pytest.approx(
        ev.trust_data(swapped, None, distances=d, k=1)
    )


def test_knn_regression_by_hand():
    Z = LINE  # neighbours (k = 1): 0->1, 1->0, 2->1, 3->4, 4->3, 5->4
    v = np.array([1.0, 2.0, 3.0, 10.0, 11.0, np.nan])  # point 5 has no value: neither scored nor used
    # on the 5 valued points (0,1,2 ; 3,4): predictions 2, 1, 2, 11, 10
    pred = np.array([2.0, 1.0, 2.0, 11.0, 10.0])
    obs = v[:5]
    r2 = 1 - np.sum((obs - pred) ** 2) / np.sum((obs - obs.mean()) ** 2)
    assert ev.knn_regression(Z, v, k=1) == pytest.approx(r2)
    assert np.isnan(ev.knn_regression(Z, [np.nan] * 6, k=1))


def test_score_map_collects_every_score(monkeypatch):
    monkeypatch.setattr(ev, "MIN_SHARED_PIXELS", 5)
    cat = pd.DataFrame({"object": LABELS, "cls": ["s", "s", "s", "q", "q", "q"], "z": [0.1, 0.2, 0.3, 1, 1, 2]})
    Z = LINE
    readouts = np.hstack([LINE, LINE**2])
    flux = np.vstack([FLUX, FLUX[:2] * 2])
    out = ev.score_map(
        Z,
        cat,
        labels=("object", "cls"),
        numeric=("z", "absent"),
        readouts=readouts,
        ks=(1, 2),
        neighbourhood=2,
        flux=flux,
        weight=np.vstack([WEIGHT, WEIGHT[:2]]),
    )
    assert out["purity_object_k1"] == pytest.approx(4 / 5)
    assert out["purity_cls_k1"] == pytest.approx(ev.knn_purity(Z, cat["cls"], 1))
    assert out["knn_r2_z"] == pytest.approx(ev.knn_regression(Z, cat["z"], 2)) and "knn_r2_absent" not in out
    assert out["resemblance"] == pytest.approx(ev.neighbour_resemblance(Z, flux, np.vstack([WEIGHT, WEIGHT[:2]])))
    assert set(out) >= {"n", "purity_object_k2", "trust_readouts", "continuity_readouts", "trust_data"}
    with pytest.raises(AutoencoderError, match="no column 'spec_class'"):
        ev.score_map(Z, cat, labels=("spec_class",))
