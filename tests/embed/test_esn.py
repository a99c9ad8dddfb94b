"""ESNReadoutEmbedder on real HARPS spectra: prediction, determinism, accuracy of the
fast path against a plain float64 reference, masking, GCV, errors, tuning."""

import numpy as np
import pytest
from sklearn.base import clone

from latentsky.embed import ESNReadoutEmbedder, ReadoutStatistics, reference_statistics, tune_reservoir
from latentsky.embed.series import prepare_batch
from latentsky.exceptions import EmbeddingError, LatentskyError

#: The reservoir of Gianniotis et al.: one pixel per step, no leak, no position input.  The tests of
#: the mechanics at pixel level (masks, sums, GCV, errors) use it; the defaults add binning and the
#: position input on top of the same mechanics.
PAPER = {"leak_rate": 1.0, "position_scaling": 0.0, "bin_pixels": 1}


def rel_err(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def test_readout_predicts_held_out_steps_better_than_a_constant(alf_cen_b):
    flux, weight = alf_cen_b[0][:4], alf_cen_b[1][:4]
    T = flux.shape[1]
    half = T // 2
    w_first = weight.copy()
    w_first[:, half:] = 0  # fit on the first half only
    emb = ESNReadoutEmbedder(backend="numpy", **PAPER).fit(flux, weight=weight)
    readouts = emb.transform(flux, weight=w_first)
    for i in range(len(flux)):
        states = emb.reservoir_.run(flux[i] - emb.offset_)  # independent float64 states
        X = np.hstack([states, np.ones((T, 1))])[half:-1]
        y = flux[i, half + 1 :]
        ok = (weight[i, half:-1] > 0) & (weight[i, half + 1 :] > 0)
        mse_esn = np.mean((X[ok] @ readouts[i] - y[ok]) ** 2)
        mse_const = np.mean((flux[i, :half][weight[i, :half] > 0].mean() - y[ok]) ** 2)
        assert mse_esn < 0.5 * mse_const, (i, mse_esn, mse_const)


def test_deterministic_for_a_random_state(alf_cen_b):
    flux, weight = alf_cen_b[0][:3], alf_cen_b[1][:3]
    kw = dict(reservoir="random", n_units=40, backend="numpy")
    a = ESNReadoutEmbedder(random_state=7, **kw).fit_transform(flux, weight=weight)
    b = ESNReadoutEmbedder(random_state=7, **kw).fit_transform(flux, weight=weight)
    c = ESNReadoutEmbedder(random_state=8, **kw).fit_transform(flux, weight=weight)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    # the simple cycle reservoir is deterministic whatever the seed
    d = ESNReadoutEmbedder(random_state=1, n_units=40, backend="numpy").fit_transform(flux, weight=weight)
    e = ESNReadoutEmbedder(random_state=2, n_units=40, backend="numpy").fit_transform(flux, weight=weight)
    assert np.array_equal(d, e)


@pytest.mark.parametrize(
    "params, tol",
    [
        # the defaults: N=100 simple cycle, leak 0.5, position input, 16-pixel bins, float32 states.  The
        # leak's longer memory conditions X^T X ~1e3 times worse than without: float32 states reach
        # ~1e-4 at a ridge of 1e-6, ~1e-5 at the default 1e-2
        ({}, {1e-6: 5e-4, 1e-2: 3e-5}),
        # a random reservoir in float32: each state sums 60 float32 products (the cycle's, one), and the
        # readouts sit ~1e-5 from the float64 ones at a ridge of 1e-6 (0.93e-5 with AVX-512, 1.1e-5 with
        # AVX2, whose sgemm kernel rounds W x otherwise); float32 Gram sums would be > 1e-4
        ({"reservoir": "random", "n_units": 60, "random_state": 0, **PAPER}, {1e-6: 2e-5, 1e-2: 1e-5}),
        ({**PAPER}, {1e-6: 1e-5, 1e-2: 1e-5}),  # the paper's reservoir, float32
        # a strong leak plus a bias moves the states off centre: X^T X is conditioned
        # ~1e4 times worse and float32 states alone reach only ~2e-4 at ridge 1e-6
        (
            {"leak_rate": 0.7, "bias": 0.1, "n_units": 60, "state_dtype": "float64", "bin_pixels": 1},
            {1e-6: 1e-5, 1e-2: 1e-5},
        ),
        # the position input on binned flux without a leak, read by the fused float32 kernel
        ({"leak_rate": 1.0, "position_scaling": 0.8, "bin_pixels": 4}, {1e-6: 1e-5, 1e-2: 1e-5}),
        (
            {"leak_rate": 0.3, "position_scaling": 0.8, "bin_pixels": 4, "state_dtype": "float64"},
            {1e-6: 1e-5, 1e-2: 1e-5},
        ),
        (
            {
                "reservoir": "random",
                "n_units": 40,
                "random_state": 0,
                "position_scaling": 0.8,
                "bin_pixels": 4,
                "state_dtype": "float64",
            },
            {1e-6: 1e-5, 1e-2: 1e-5},
        ),
    ],
    ids=[
        "defaults",
        "random-paper",
        "cycle-paper",
        "cycle-leak-bias-float64",
        "cycle-position-binned",
        "cycle-leak-position-float64",
        "random-position-binned-float64",
    ],
)
def test_fast_path_matches_float64_reference(harps, params, tol):
    flux, weight, cat = harps
    rows = [1, 2, 3, 14]  # Gl 581 and alpha Cen B at S/N 343, 414 and 184
    flux, weight = flux[rows], weight[rows].copy()
    weight[1, 1500:1620] = 0  # a gap inside the spectrum
    weight[2, :300] = 0  # off coverage at the start
    emb = ESNReadoutEmbedder(backend="numpy", **params).fit(flux, weight=weight)
    fast = emb.statistics(flux, weight)
    ref = reference_statistics(
        flux, weight, emb.reservoir_, offset=emb.offset_, washout=emb.washout, bin_pixels=emb.bin_pixels
    )
    assert np.array_equal(fast.n_steps, ref.n_steps)
    np.testing.assert_allclose(fast.persistence, ref.persistence, rtol=1e-12)
    for ridge, limit in tol.items():
        err = rel_err(fast.readouts(ridge), ref.readouts(ridge))
        assert err.max() < limit, (ridge, err)


def test_float32_gram_sums_would_fail_the_same_check(alf_cen_b):
    """Guards the test above: it can tell float32 sums (the known pitfall) from float64 ones."""
    flux = alf_cen_b[0][:1]
    emb = ESNReadoutEmbedder(backend="numpy", **PAPER).fit(flux)
    ref = reference_statistics(flux, None, emb.reservoir_, offset=emb.offset_, washout=emb.washout)
    b = prepare_batch(flux, None, offset=emb.offset_, washout=emb.washout)
    X = np.hstack([emb.reservoir_.run(flux[0] - emb.offset_), np.ones((flux.shape[1], 1))]).astype("f4")
    X *= b.mask[0, :, None].astype("f4")
    g32 = (X.T @ X).astype("f8")[None]
    c32 = (X.T @ b.y[0].astype("f4")).astype("f8")[None]
    bad = ReadoutStatistics(g32, c32, ref.yty, ref.n_steps)
    assert rel_err(bad.readouts(1e-6), ref.readouts(1e-6)).max() > 1e-4


def test_masked_pixels_are_skipped_not_zeros(alf_cen_b):
    flux, weight = alf_cen_b[0][:2].copy(), alf_cen_b[1][:2].copy()
    weight[0, 2000:2100] = 0
    weight[1, 3000] = 0
    emb = ESNReadoutEmbedder(backend="numpy", **PAPER).fit(flux, weight=weight)
    base = emb.statistics(flux, weight)
    # whatever sits in masked pixels (garbage, zeros, NaN) changes nothing
    for junk in (1e6, 0.0, np.nan):
        dirty = flux.copy()
        dirty[weight == 0] = junk
        other = emb.statistics(dirty, weight)
        assert np.array_equal(other.gram, base.gram) and np.array_equal(other.xty, base.xty)
    # NaN flux counts as masked even with a positive weight
    nan_flux = flux.copy()
    nan_flux[weight == 0] = np.nan
    assert np.array_equal(emb.statistics(nan_flux).gram, base.gram)
    # steps whose input or target is masked leave the sums; the washout counts from the first valid pixel
    v = weight > 0
    for i in range(2):
        first = np.argmax(v[i])
        t = np.arange(flux.shape[1] - 1)
        expected = np.sum(v[i, :-1] & v[i, 1:] & (t >= first + emb.washout))
        assert base.n_steps[i] == expected
    full = emb.statistics(flux, alf_cen_b[1][:2]).n_steps
    assert full[0] - base.n_steps[0] == 101 and full[1] - base.n_steps[1] == 2  # 100 masked pixels: 101 steps
    # feeding masked pixels as zeros (the wrong way) would give a different readout
    zeros = emb.statistics(np.where(weight > 0, flux, 0.0))
    assert not np.allclose(zeros.readouts(1e-2)[0], base.readouts(1e-2)[0])


def test_statistics_give_the_data_space_error(alf_cen_b):
    flux = alf_cen_b[0][:2]
    emb = ESNReadoutEmbedder(n_units=30, backend="numpy", **PAPER).fit(flux)
    st = emb.statistics(flux)
    w = st.readouts(1e-3) + 0.01  # any readout, not only the optimum
    for i in range(2):
        X = np.hstack([emb.reservoir_.run(flux[i] - emb.offset_), np.ones((flux.shape[1], 1))])
        X, y = X[emb.washout : -1], flux[i, emb.washout + 1 :]
        assert np.isclose(st.sse(w)[i], np.sum((X @ w[i] - y) ** 2), rtol=1e-6)


def test_gcv_matches_brute_force_and_picks_from_the_grid(alf_cen_b):
    flux = alf_cen_b[0][:3]
    grid = [1e-6, 1e-4, 1e-2, 1.0, 100.0]
    emb = ESNReadoutEmbedder(n_units=30, ridge="gcv", ridge_grid=grid, backend="numpy", **PAPER).fit(flux)
    assert emb.ridge_ in grid and emb.gcv_scores_.shape == (5,)
    st = emb.statistics(flux)
    scores = st.gcv(grid)
    X = np.hstack([emb.reservoir_.run(flux[0] - emb.offset_), np.ones((flux.shape[1], 1))])
    X, y = X[emb.washout : -1], flux[0, emb.washout + 1 :]
    for k, lam in enumerate(grid):
        H = X @ np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T)
        n = len(y)
        brute = n * np.sum((y - H @ y) ** 2) / (n - np.trace(H)) ** 2
        assert np.isclose(scores[k, 0], brute, rtol=1e-6)
    assert np.allclose(emb.transform(flux), st.readouts(emb.ridge_))


def test_errors_name_the_spectrum_or_parameter(alf_cen_b):
    flux = alf_cen_b[0][:3].copy()
    emb = ESNReadoutEmbedder(n_units=10, backend="numpy", **PAPER).fit(flux)
    bad = flux.copy()
    bad[1] = np.nan
    with pytest.raises(EmbeddingError, match=r"spectrum alpha-1: no valid pixels"):
        emb.transform(bad, ids=["alpha-0", "alpha-1", "alpha-2"])
    with pytest.raises(EmbeddingError, match=r"spectrum 2: no valid pixels"):
        emb.transform(flux, weight=np.where(np.arange(3)[:, None] == 2, 0.0, 1.0) * np.ones_like(flux))
    few = np.ones_like(flux)
    few[0, 22:] = 0  # 22 valid pixels, washout 20: 1 step, enough
    assert emb.statistics(flux, weight=few).n_steps[0] == 1
    few[0, 21:] = 0  # 21 valid pixels: no step left
    with pytest.raises(EmbeddingError, match=r"spectrum star-a: no usable step after a washout of 20"):
        emb.transform(flux, weight=few, ids=["star-a", "b", "c"])
    alternate = np.ones_like(flux)
    alternate[1, ::2] = 0  # no two consecutive valid pixels
    with pytest.raises(EmbeddingError, match=r"spectrum b: no usable step"):
        emb.transform(flux, weight=alternate, ids=["a", "b", "c"])
    with pytest.raises(EmbeddingError, match="washout=20"):
        ESNReadoutEmbedder(backend="numpy", **PAPER).fit(flux[:, :15])
    with pytest.raises(EmbeddingError, match="series of 15 steps"):  # 16-pixel bins: 15 steps
        ESNReadoutEmbedder(backend="numpy").fit(flux[:, : 16 * 15])
    for params, name in [
        ({"ridge": -1.0}, "ridge"),
        ({"ridge": "loo"}, "ridge"),
        ({"input_offset": "median"}, "input_offset"),
        ({"reservoir": "ring"}, "reservoir"),
        ({"backend": "cuda"}, "backend"),
        ({"washout": -1}, "washout"),
        ({"cycle_weight": 1.5}, "cycle_weight"),
        ({"bin_pixels": 0}, "bin_pixels"),
        ({"tune": -1}, "tune"),
        ({"tune": 2, "tune_params": ("ridge",)}, "tune_params"),
    ]:
        with pytest.raises(LatentskyError, match=name):
            ESNReadoutEmbedder(n_units=10, **params).fit_transform(flux)


def test_estimator_api(alf_cen_b):
    flux = alf_cen_b[0][:2]
    emb = ESNReadoutEmbedder(n_units=12, ridge=1e-3, backend="numpy")
    assert emb.get_params()["n_units"] == 12
    emb.set_params(n_units=15)
    assert emb.fit(flux) is emb
    out = emb.transform(flux)
    assert out.shape == (2, 16) and out.dtype == np.float64
    assert list(emb.get_feature_names_out()[-2:]) == ["w14", "bias"]
    c = clone(emb)
    assert not hasattr(c, "reservoir_") and c.get_params() == emb.get_params()
    # fit_transform passes the weights (masks) to transform too
    w = np.ones_like(flux)
    w[0, 100:200] = 0
    assert np.array_equal(c.fit_transform(flux, weight=w), c.transform(flux, weight=w))


def test_tune_reservoir_improves_the_held_out_error(alf_cen_b):
    flux, weight = alf_cen_b
    events = []
    # start from a weak reservoir (tiny input weights, short memory)
    emb = ESNReadoutEmbedder(n_units=30, cycle_weight=0.1, input_scaling=0.02, backend="numpy", **PAPER)
    res = tune_reservoir(flux, weight, embedder=emb, n_series=4, max_iter=15, random_state=0, progress=events.append)
    assert res["error"] <= res["initial_error"]
    assert res["error"] < 0.95 * res["initial_error"]  # the poor start is improved
    assert abs(res["cycle_weight"]) < 1
    assert events[0].task == "tune" and events[-1].finished and events[-1].done == res["n_evaluations"]


def test_tuning_judges_the_reservoir_the_embedder_builds(alf_cen_b):
    """The objective is the held-out error of the embedder's own reservoir (its leak rate, position
    input, binning), recomputed here from plain float64 states: fit on the even blocks of steps,
    predict the odd ones and the other way round, over persistence's error on the same steps."""
    from latentsky.embed.series import prepare_batch

    flux, weight = alf_cen_b[0][:2], alf_cen_b[1][:2]
    emb = ESNReadoutEmbedder(
        n_units=20, leak_rate=0.3, position_scaling=0.5, bin_pixels=2, backend="numpy", state_dtype="float64"
    )
    res = tune_reservoir(flux, weight, embedder=emb, n_series=2, max_iter=1, n_blocks=4, random_state=0)
    offset = float(np.mean(flux[weight > 0]))
    b = prepare_batch(flux, weight, offset=offset, washout=emb.washout, dtype="f8", bin_pixels=2)
    fold = (np.arange(b.u.shape[1]) * 4 // b.u.shape[1]) % 2
    logs = []
    for i in range(2):
        Z = np.hstack([emb.make_reservoir().run(b.u[i]), np.ones((b.u.shape[1], 1))])
        used = b.mask[i] > 0
        sse = pers = 0.0
        for fit, test in ((0, 1), (1, 0)):
            f, t = used & (fold == fit), used & (fold == test)
            w = np.linalg.solve(Z[f].T @ Z[f] + emb.ridge * np.eye(21), Z[f].T @ b.y[i, f])
            sse += np.sum((Z[t] @ w - b.y[i, t]) ** 2)
            pers += np.sum((b.y[i, t] - (b.u[i, t] + offset)) ** 2)
        logs.append(np.log(sse / pers))
    assert res["initial_error"] == pytest.approx(np.exp(np.mean(logs)), rel=1e-6)
    # and a tuned fit builds its reservoir from the tuned values, with the embedder's leak rate
    tuned = ESNReadoutEmbedder(n_units=20, leak_rate=0.3, tune=2, tune_iter=6, backend="numpy", random_state=0).fit(
        flux, weight=weight
    )
    assert tuned.reservoir_.leak_rate == 0.3
    assert tuned.reservoir_.cycle_weight == pytest.approx(tuned.tuned_["cycle_weight"])
    assert tuned.get_params()["cycle_weight"] == 0.9  # the constructor's parameters stay


def test_pickle_round_trip(alf_cen_b):
    import pickle

    flux, weight = alf_cen_b[0][:2], alf_cen_b[1][:2]
    emb = ESNReadoutEmbedder(n_units=20, backend="numpy").fit(flux, weight=weight)
    before = emb.transform(flux, weight)
    again = pickle.loads(pickle.dumps(emb))
    assert np.array_equal(again.transform(flux, weight), before)


def test_one_step_prediction_is_the_readouts_data_space_error(alf_cen_b):
    """What the app draws over a spectrum: the readout's prediction of each (binned) step, on the grid's
    pixels, with exactly the error the sufficient statistics give."""
    from latentsky.embed.series import one_step_prediction

    flux, weight = alf_cen_b[0][:2], alf_cen_b[1][:2].copy()
    weight[0, 1000:1100] = 0
    emb = ESNReadoutEmbedder(backend="numpy", state_dtype="float64").fit(flux, weight=weight)
    w, st = emb.transform_with_statistics(flux, weight)
    model, error = one_step_prediction(
        emb.reservoir_, w[0], flux[0], weight[0], offset=emb.offset_, washout=emb.washout, bin_pixels=emb.bin_pixels
    )
    assert model.shape == flux[0].shape
    assert error == pytest.approx(st.sse(w)[0] / st.n_steps[0], rel=1e-6)
    d = emb.bin_pixels
    assert not np.isfinite(model[weight[0] == 0]).any()  # nothing drawn on masked pixels
    steps = model[: len(model) // d * d].reshape(-1, d)
    fitted = np.isfinite(steps).any(axis=1)
    assert fitted.sum() == st.n_steps[0]
    assert np.all(np.nanmax(steps[fitted], axis=1) == np.nanmin(steps[fitted], axis=1))  # one value per bin
    assert not fitted[: emb.washout + 1].any()  # nothing inside the washout
    assert not fitted[1000 // d + 1 : 1100 // d].any()  # nor in the gap
