"""The ridge readouts solved from the statistics: the compiled LAPACK call against NumPy's solve, and a
system that is not positive definite is solved by least squares instead of failing."""

import numpy as np

from latentsky.embed import ESNReadoutEmbedder
from latentsky.embed.ridge_solve import solve
from latentsky.embed.statistics import solve_readouts


def test_readouts_are_those_of_a_dense_solve(harps):
    flux, weight, _ = harps
    emb = ESNReadoutEmbedder(n_units=50, leak_rate=1.0, bin_pixels=1).fit(flux[:6], weight=weight[:6])
    st = emb.statistics(flux[:6], weight[:6])
    eye = np.eye(st.gram.shape[-1])
    for ridge in (1e-6, 1e-2, 10.0):
        ref = np.linalg.solve(st.gram + ridge * eye, st.xty[..., None])[..., 0]
        w = solve_readouts(st.gram, st.xty, ridge)
        # ill-conditioned at the small ridge: both solves are backward stable, so compare residuals too
        assert np.allclose(w, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
        resid = np.einsum("nij,nj->ni", st.gram + ridge * eye, w) - st.xty
        assert np.abs(resid).max() < 1e-9 * np.abs(st.xty).max()


def test_a_system_not_positive_definite_is_solved_another_way():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 8, 20))
    gram = np.einsum("nik,njk->nij", a, a)
    gram[1] = -np.eye(8)  # indefinite even with the ridge: the Cholesky solve stops at its first pivot
    xty = rng.normal(size=(3, 8))
    out, ok = solve(gram, xty, 0.5)
    assert ok.tolist() == [True, False, True]
    w = solve_readouts(gram, xty, 0.5)
    assert np.allclose(w[1], xty[1] / (0.5 - 1.0))  # (-I + 0.5 I) w = x, by least squares
    assert np.allclose(w[[0, 2]], out[[0, 2]], rtol=0, atol=0)
    ref = np.linalg.solve(gram[[0, 2]] + 0.5 * np.eye(8), xty[[0, 2], :, None])[..., 0]
    assert np.allclose(w[[0, 2]], ref, rtol=1e-10)
