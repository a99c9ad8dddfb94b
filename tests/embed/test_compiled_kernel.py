"""The fused kernel's Gram tiles: the tile and block precision follow the instruction set, and every
tile and precision gives the same sums."""

import numpy as np
import pytest

from latentsky.embed import ESNReadoutEmbedder
from latentsky.embed.compiled_kernel import compiled_statistics, gram_plan
from latentsky.embed.series import prepare_batch


def test_gram_plan_follows_the_vector_registers():
    # 16 vector registers (AVX2): 3 x 3 tiles on float32 blocks; 32 (AVX-512, arm64): 4 x 4 on float64
    assert gram_plan("+avx,+avx2,+fma,-avx512f,-avx512bw", "x86_64") == (3, "float32")
    assert gram_plan("+avx,+avx2,+fma,+avx512f,+avx512bw", "x86_64") == (4, "float64")
    assert gram_plan("", "arm64") == (4, "float64")


def test_every_tile_and_block_precision_gives_the_same_sums(harps):
    flux, weight, _ = harps
    flux, weight = flux[[0, 5]], weight[[0, 5]].copy()
    weight[0, 1000:1037] = 0  # masked steps inside a block
    emb = ESNReadoutEmbedder(n_units=22, leak_rate=0.7).fit(flux, weight=weight)  # N+1 = 23: padded tiles
    b = prepare_batch(flux, weight, offset=emb.offset_, washout=emb.washout, bin_pixels=emb.bin_pixels)
    out = {}
    for tile in (3, 4):
        for block in ("float32", "float64"):
            gram, xty = np.zeros((2, 23, 23)), np.zeros((2, 23))
            compiled_statistics(b.u, b.mask, b.y, emb.reservoir_, 100, gram, xty, tile=tile, block_dtype=block)
            out[tile, block] = gram, xty
    g0, c0 = out[3, "float32"]
    assert np.all(np.diagonal(g0, axis1=1, axis2=2) > 0)
    assert np.allclose(g0, np.transpose(g0, (0, 2, 1)), rtol=0, atol=0)
    for g, c in out.values():
        assert np.allclose(g, g0, rtol=1e-12, atol=1e-12 * np.abs(g0).max())
        assert np.allclose(c, c0, rtol=1e-12, atol=1e-12 * np.abs(c0).max())


def test_an_unknown_tile_or_precision_is_refused(harps):
    emb = ESNReadoutEmbedder(n_units=10).fit(harps[0][:1], weight=harps[1][:1])
    b = prepare_batch(harps[0][:1], harps[1][:1], offset=emb.offset_, washout=emb.washout, bin_pixels=emb.bin_pixels)
    g, c = np.zeros((1, 11, 11)), np.zeros((1, 11))
    with pytest.raises(ValueError, match="tile=5"):
        compiled_statistics(b.u, b.mask, b.y, emb.reservoir_, 64, g, c, tile=5)
    with pytest.raises(ValueError, match="block_dtype='float16'"):
        compiled_statistics(b.u, b.mask, b.y, emb.reservoir_, 64, g, c, block_dtype="float16")
