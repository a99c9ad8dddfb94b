"""The NumPy and TensorFlow back ends agree; threads do not change results;
TensorFlow stays unimported until asked for."""

import subprocess
import sys

import numpy as np
import pytest

from latentsky.embed import ESNReadoutEmbedder
from latentsky.embed.backends import NumpyBackend, get_backend
from latentsky.exceptions import EmbeddingError


def rel_err(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


PAPER = {"leak_rate": 1.0, "position_scaling": 0.0, "bin_pixels": 1}  # the reservoir of Gianniotis et al.


@pytest.mark.parametrize(
    "params, tol",
    [
        ({**PAPER}, 1e-5),
        # the defaults (leak, position input, binned): ~1e3 times worse conditioned, float32 states
        # (TensorFlow's tanh differs from the fused kernel's by a few ulp)
        ({}, 1e-3),
        ({"state_dtype": "float64", "reservoir": "random", "n_units": 40, "random_state": 1}, 1e-6),
        ({"state_dtype": "float64", "leak_rate": 0.6, "bias": 0.2, "n_units": 40}, 1e-6),
        # float32 states in a random reservoir: TensorFlow's (Eigen's) float32 tanh differs
        # from NumPy's by a few ulp and this X^T X is ~10x worse conditioned than the cycle's
        ({"reservoir": "random", "n_units": 40, "random_state": 1, **PAPER}, 3e-4),
        ({"state_dtype": "float64", "leak_rate": 0.3, "position_scaling": 0.8, "bin_pixels": 4, "n_units": 40}, 1e-6),
    ],
    ids=[
        "paper-float32",
        "defaults-float32",
        "random-float64",
        "leak-bias-float64",
        "random-float32",
        "position-binned-float64",
    ],
)
def test_numpy_and_tensorflow_agree(harps, params, tol):
    pytest.importorskip("tensorflow")
    flux, weight, _ = harps
    flux, weight = flux[[1, 2, 5]], weight[[1, 2, 5]].copy()
    weight[2, 900:950] = 0
    a = ESNReadoutEmbedder(backend="numpy", **params).fit(flux, weight=weight)
    b = ESNReadoutEmbedder(backend="tensorflow", block_steps=700, **params).fit(flux, weight=weight)
    sa, sb = a.statistics(flux, weight), b.statistics(flux, weight)
    assert np.array_equal(sa.n_steps, sb.n_steps)
    assert np.allclose(sa.gram, sb.gram, rtol=1e-5, atol=1e-6 * np.abs(sa.gram).max())
    for ridge in (1e-6, 1e-2):
        assert rel_err(sb.readouts(ridge), sa.readouts(ridge)).max() < tol


def test_thread_count_and_block_size_do_not_change_results(alf_cen_b):
    flux, weight = alf_cen_b[0][:6], alf_cen_b[1][:6]
    out = [
        ESNReadoutEmbedder(n_units=30, backend="numpy", n_threads=n, block_steps=k, batch_size=b)
        .fit(flux)
        .statistics(flux, weight)
        for n, k, b in [(1, 1024, 6), (2, 1024, 4), (2, 1024, 1)]
    ]
    for other in out[1:]:
        assert np.array_equal(other.gram, out[0].gram) and np.array_equal(other.xty, out[0].xty)
    # a different block length changes only the summation order
    blk = ESNReadoutEmbedder(n_units=30, backend="numpy", block_steps=300).fit(flux).statistics(flux, weight)
    assert np.allclose(blk.gram, out[0].gram, rtol=1e-12)


def test_auto_is_numpy_without_a_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert isinstance(get_backend("auto"), NumpyBackend)
    with pytest.raises(EmbeddingError, match="backend"):
        get_backend("jax")
    with pytest.raises(EmbeddingError, match="state_dtype"):
        get_backend("numpy", state_dtype="float16")


def test_tensorflow_is_imported_lazily():
    code = (
        "import sys, latentsky.embed, latentsky.embed.backends, latentsky.embed.esn;"
        "from latentsky.commands import embed;"
        "print('tensorflow' in sys.modules, 'dask' in sys.modules, 'numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


@pytest.mark.parametrize("params", [{}, {"leak_rate": 0.7, "bias": 0.1, "n_units": 50}], ids=["cycle", "leak-bias"])
def test_compiled_kernel_matches_ufunc_kernel(harps, params):
    """The fused numba kernel (default for the simple cycle) against the plain NumPy one."""
    from latentsky.embed.series import batch_statistics

    flux, weight, _ = harps
    flux, weight = flux[[1, 3, 9]], weight[[1, 3, 9]].copy()
    weight[1, 2000:2050] = 0
    emb = ESNReadoutEmbedder(**params).fit(flux, weight=weight)
    kw = dict(offset=emb.offset_, washout=emb.washout)
    compiled = NumpyBackend(kernel="compiled", block_steps=1000)
    assert compiled.kernel_for(emb.reservoir_) == "compiled"
    a = batch_statistics(flux, weight, emb.reservoir_, backend=compiled, **kw)
    b = batch_statistics(flux, weight, emb.reservoir_, backend=NumpyBackend(kernel="ufunc"), **kw)
    assert np.allclose(a.gram, b.gram, rtol=1e-5, atol=1e-6 * np.abs(b.gram).max())
    assert np.allclose(a.xty, b.xty, rtol=1e-5, atol=1e-6 * np.abs(b.xty).max())
    assert rel_err(a.readouts(1e-2), b.readouts(1e-2)).max() < 1e-4


def test_compiled_kernel_is_refused_where_it_does_not_apply():
    from latentsky.embed.reservoir import random_sparse_reservoir, simple_cycle_reservoir

    res = random_sparse_reservoir(10, random_state=0)
    assert NumpyBackend().kernel_for(res) == "ufunc"
    assert NumpyBackend(state_dtype="float64").kernel_for(simple_cycle_reservoir(10)) == "ufunc"
    with pytest.raises(EmbeddingError, match="compiled"):
        NumpyBackend(kernel="compiled").kernel_for(res)


def test_the_sums_go_into_the_arrays_given(alf_cen_b):
    """``out=``: the sums overwrite whatever the given arrays held (views of a larger result), as fresh arrays
    would hold them; arrays of the wrong shape are refused by name."""
    from latentsky.embed.series import prepare_batch

    flux, weight = alf_cen_b[0][:3], alf_cen_b[1][:3]
    emb = ESNReadoutEmbedder(n_units=30, backend="numpy").fit(flux)
    b = prepare_batch(flux, weight, offset=emb.offset_, washout=emb.washout, bin_pixels=emb.bin_pixels)
    backend = NumpyBackend()
    gram, xty = backend.statistics(b.u, b.mask, b.y, emb.reservoir_)
    big_gram, big_xty = np.full((5, 31, 31), np.nan), np.full((5, 31), np.nan)
    backend.statistics(b.u, b.mask, b.y, emb.reservoir_, out=(big_gram[1:4], big_xty[1:4]))
    assert np.array_equal(big_gram[1:4], gram) and np.array_equal(big_xty[1:4], xty)
    assert np.isnan(big_gram[[0, 4]]).all()
    with pytest.raises(ValueError, match="out: need float64 arrays"):
        backend.statistics(b.u, b.mask, b.y, emb.reservoir_, out=(big_gram[:2], big_xty[:2]))
