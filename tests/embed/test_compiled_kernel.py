"""The fused kernel's Gram tiles: the tile and block precision follow the instruction set, every tile,
precision and block length gives the same sums, and they are the float64 sums of the float32 states, with
either loop order of the reservoir (one step over the units; one unit along the steps, without leak)."""

import numpy as np
import pytest

from latentsky.embed import ESNReadoutEmbedder
from latentsky.embed.compiled_kernel import compiled_statistics, compiled_tanh32, gram_plan
from latentsky.embed.series import prepare_batch


def test_gram_plan_follows_the_vector_registers():
    # 16 vector registers (AVX2): 3 x 3 tiles on float32 blocks; 32 (AVX-512, arm64): 4 x 4 on float64
    assert gram_plan("+avx,+avx2,+fma,-avx512f,-avx512bw", "x86_64") == (3, "float32")
    assert gram_plan("+avx,+avx2,+fma,+avx512f,+avx512bw", "x86_64") == (4, "float64")
    assert gram_plan("", "arm64") == (4, "float64")


@pytest.mark.parametrize(
    "leak, sweep",
    [(0.7, "steps"), (1.0, "units")],
    ids=["leaky, one step at a time", "no leak, one unit at a time"],
)
def test_every_tile_and_block_precision_gives_the_same_sums(harps, leak, sweep):
    flux, weight, _ = harps
    flux, weight = flux[[0, 5]], weight[[0, 5]].copy()
    weight[0, 1000:1037] = 0  # masked steps inside a block
    # 22 units = 7 x 3 + 1 = 5 x 4 + 2: rows past the last whole tile
    emb = ESNReadoutEmbedder(n_units=22, leak_rate=leak).fit(flux, weight=weight)
    b = prepare_batch(flux, weight, offset=emb.offset_, washout=emb.washout, bin_pixels=emb.bin_pixels)
    out = {}
    for tile in (3, 4):
        for block in ("float32", "float64"):
            for steps in (13, 100, 4096):  # blocks end at other steps (whole vectors of 8: 13 -> 16)
                gram, xty = np.zeros((2, 23, 23)), np.zeros((2, 23))
                compiled_statistics(
                    b.u, b.mask, b.y, emb.reservoir_, steps, gram, xty, tile=tile, block_dtype=block, sweep=sweep
                )
                out[tile, block, steps] = gram, xty
    g0, c0 = out[3, "float32", 100]
    assert np.all(np.diagonal(g0, axis1=1, axis2=2) > 0)
    assert np.allclose(g0, np.transpose(g0, (0, 2, 1)), rtol=0, atol=0)
    for g, c in out.values():
        assert np.allclose(g, g0, rtol=1e-12, atol=1e-12 * np.abs(g0).max())
        assert np.allclose(c, c0, rtol=1e-12, atol=1e-12 * np.abs(c0).max())


def test_both_loop_orders_give_the_same_sums(harps):
    # without leak either order applies; the states may differ in the last float32 bit (vector and
    # scalar tanh round differently), so the sums agree to float32 precision, not bit for bit
    flux, weight, _ = harps
    flux, weight = flux[[1, 6]], weight[[1, 6]].copy()
    weight[1, 2000:2100] = 0
    for position in (0.0, 1.0):  # the constant bias, and the position input (a bias term per step)
        emb = ESNReadoutEmbedder(n_units=30, leak_rate=1.0, position_scaling=position, bin_pixels=1)
        emb.fit(flux, weight=weight)
        b = prepare_batch(flux, weight, offset=emb.offset_, washout=emb.washout, bin_pixels=emb.bin_pixels)
        sums = {}
        for sweep in ("steps", "units"):
            gram, xty = np.zeros((2, 31, 31)), np.zeros((2, 31))
            compiled_statistics(b.u, b.mask, b.y, emb.reservoir_, 256, gram, xty, sweep=sweep)
            sums[sweep] = gram, xty
        (g0, c0), (g1, c1) = sums["steps"], sums["units"]
        assert np.allclose(g1, g0, rtol=0, atol=1e-6 * np.abs(g0).max())
        assert np.allclose(c1, c0, rtol=0, atol=1e-6 * np.abs(c0).max())
        assert g1[1, -1, -1] == g0[1, -1, -1] == b.mask[1].sum()


@pytest.mark.parametrize("n_units, n_steps", [(1, 40), (5, 3), (5, 700), (300, 600)])
def test_the_loop_orders_agree_on_odd_shapes(n_units, n_steps):
    # one unit (it hears itself), a series shorter than the cycle, several blocks, more units than a block
    from latentsky.embed.reservoir import simple_cycle_reservoir

    rng = np.random.default_rng(n_units)
    res = simple_cycle_reservoir(n_units, bias=0.1, position_scaling=0.5)
    u = rng.normal(size=(2, n_steps)).astype(np.float32)
    mask, y = (rng.random((2, n_steps)) > 0.1).astype(float), rng.normal(size=(2, n_steps))
    sums = {}
    for sweep in ("steps", "units"):
        gram, xty = np.zeros((2, n_units + 1, n_units + 1)), np.zeros((2, n_units + 1))
        compiled_statistics(u, mask, y, res, 256, gram, xty, sweep=sweep)
        sums[sweep] = gram, xty
    (g0, c0), (g1, c1) = sums["steps"], sums["units"]
    assert np.abs(g0).max() > 0
    assert np.allclose(g1, g0, rtol=0, atol=1e-6 * np.abs(g0).max())
    assert np.allclose(c1, c0, rtol=0, atol=1e-6 * np.abs(c0).max())


def test_an_unknown_tile_or_precision_is_refused(harps):
    emb = ESNReadoutEmbedder(n_units=10).fit(harps[0][:1], weight=harps[1][:1])
    b = prepare_batch(harps[0][:1], harps[1][:1], offset=emb.offset_, washout=emb.washout, bin_pixels=emb.bin_pixels)
    g, c = np.zeros((1, 11, 11)), np.zeros((1, 11))
    with pytest.raises(ValueError, match="tile=5"):
        compiled_statistics(b.u, b.mask, b.y, emb.reservoir_, 64, g, c, tile=5)
    with pytest.raises(ValueError, match="block_dtype='float16'"):
        compiled_statistics(b.u, b.mask, b.y, emb.reservoir_, 64, g, c, block_dtype="float16")
    with pytest.raises(ValueError, match="sweep='units'"):  # the default reservoir leaks
        compiled_statistics(b.u, b.mask, b.y, emb.reservoir_, 64, g, c, sweep="units")


def _float32_states(u, vin, bias, r, a):
    """The kernel's float32 reservoir states, one step at a time (no mask); ``bias`` (T, N): per step."""
    import numba

    tanh32 = compiled_tanh32()

    @numba.njit(fastmath=True, error_model="numpy")
    def run(u, vin, bias, r, a):
        B, T = u.shape
        N = vin.size
        X = np.zeros((B, T, N), np.float32)
        for b in range(B):
            x = np.zeros(N, np.float32)
            for t in range(T):
                xn = np.empty(N, np.float32)
                for i in range(N):
                    xn[i] = tanh32(r * x[i - 1] + vin[i] * u[b, t] + bias[t, i])  # x[-1]: the last unit
                x = a * xn + (np.float32(1.0) - a) * x
                X[b, t] = x
        return X

    return run(u, vin, bias, r, a)


@pytest.mark.parametrize("leak, position", [(0.8, 1.0), (1.0, 1.0), (1.0, 0.0)])
def test_the_sums_are_the_float64_sums_of_the_states(harps, leak, position):
    # gram = sum_t m^2 z z^T and xty = sum_t m z y with z = [x_t, 1], for a mask with zeros (skipped
    # steps) and fractions, against float64 sums of the same float32 states
    flux, weight, _ = harps
    flux, weight = flux[[2, 7]], weight[[2, 7]].copy()
    weight[1, 300:700] = 0
    emb = ESNReadoutEmbedder(n_units=13, leak_rate=leak, position_scaling=position).fit(flux, weight=weight)
    b = prepare_batch(flux, weight, offset=emb.offset_, washout=emb.washout, bin_pixels=emb.bin_pixels)
    mask = b.mask.copy()
    mask[0, 50:90] = 0.5
    res = emb.reservoir_
    f32 = np.float32
    T = b.u.shape[1]
    offset = res.drive_offset(T)  # the position input (T, N), or None: the constant bias
    bias = np.broadcast_to(res.bias, (T, res.bias.size)) if offset is None else offset
    X = _float32_states(
        b.u.astype(f32),
        res.input_weights.astype(f32),
        np.ascontiguousarray(bias, f32),
        f32(res.cycle_weight),
        f32(res.leak_rate),
    ).astype(np.float64)
    Z = np.concatenate([X, np.ones(X.shape[:2] + (1,))], axis=2) * mask[:, :, None]
    gram_ref = np.einsum("bti,btj->bij", Z, Z)
    xty_ref = np.einsum("bti,bt->bi", Z, b.y)
    for tile, block in ((3, "float32"), (4, "float64")):
        gram, xty = np.zeros((2, 14, 14)), np.zeros((2, 14))
        compiled_statistics(b.u, mask, b.y, res, 64, gram, xty, tile=tile, block_dtype=block)
        # the states may differ from the reference's in the last float32 bit (another order of operations)
        assert np.allclose(gram, gram_ref, rtol=1e-5, atol=1e-6 * np.abs(gram_ref).max())
        assert np.allclose(xty, xty_ref, rtol=1e-5, atol=1e-6 * np.abs(xty_ref).max())
        assert gram[0, -1, -1] == pytest.approx((mask[0] ** 2).sum(), rel=1e-14)
        assert xty[0, -1] == pytest.approx((mask[0] * b.y[0]).sum(), rel=1e-12)
