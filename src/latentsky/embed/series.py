"""From spectra on the common grid to the series a reservoir reads, its step mask and its targets.

A spectrum on the log-lambda grid is a series ``u_0 .. u_{T-1}`` (flux along
wavelength).  With ``bin_pixels = d > 1`` the reservoir reads the flux averaged
over consecutive groups of ``d`` pixels instead (inverse-variance weighted; a
bin is valid when at least half of its pixels are), a series ``d`` times
shorter whose one-step prediction spans ``d`` pixels.

Masked pixels
    A pixel (or bin) is valid when its weight (inverse variance) is > 0 and
    its flux is finite.  Step ``t`` enters the regression only when both
    ``u_t`` (the input) and ``u_{t+1}`` (the target) are valid and ``t`` is at
    least ``washout`` steps after the series' first valid value.  The
    reservoir still runs through gaps so that time stays aligned with
    wavelength: at an invalid value it is fed the *neutral value* ``offset``
    (after the shift, an input of exactly 0), i.e. featureless flux at the data
    set's mean level, so a gap injects no structure and its memory fades at
    the rate of the reservoir.  Those steps are left out of the sums.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from latentsky.embed._errors import check_param
from latentsky.embed.reservoir import Reservoir
from latentsky.embed.statistics import ReadoutStatistics
from latentsky.exceptions import EmbeddingError


@dataclasses.dataclass
class Batch:
    """A batch of series prepared for a back end (see :func:`prepare_batch`)."""

    u: np.ndarray  # (B, T') shifted input in the state dtype, 0 at invalid values
    mask: np.ndarray  # (B, T') float64, 1 where step t enters the regression
    y: np.ndarray  # (B, T') float64 target u_{t+1}, 0 where mask is 0
    yty: np.ndarray  # (B,)
    n_steps: np.ndarray  # (B,) int64
    persistence: np.ndarray  # (B,) sum over the steps of (u_{t+1} - u_t)^2


def valid_pixels(flux: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    """Boolean (B, T): finite flux with weight > 0 (weight None: finite flux)."""
    valid = np.isfinite(flux)
    if weight is not None:
        valid &= np.asarray(weight) > 0
    return valid


def bin_series(flux, weight, bin_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Inverse-variance weighted means of consecutive groups of ``bin_pixels`` pixels.

    Parameters
    ----------
    flux, weight : ndarray (B, T)
        ``weight`` None counts every finite pixel alike.
    bin_pixels : int
        Pixels per bin ``d``; the last bin is padded with invalid pixels.

    Returns
    -------
    flux, weight : ndarray (B, ceil(T / d))
        A bin's flux is NaN and its weight 0 unless at least half of its
        ``d`` pixels are valid; its weight is the sum of theirs.
    """
    check_param(
        "bin_pixels",
        bin_pixels,
        isinstance(bin_pixels, numbers.Integral) and bin_pixels >= 1,
        "must be a positive integer",
    )
    flux = np.atleast_2d(np.asarray(flux, dtype="f8"))
    if bin_pixels == 1:
        return flux, None if weight is None else np.atleast_2d(np.asarray(weight))
    valid = valid_pixels(flux, None if weight is None else np.atleast_2d(weight))
    w = np.where(valid, 1.0 if weight is None else np.atleast_2d(np.asarray(weight, dtype="f8")), 0.0)
    B, T = flux.shape
    nb = -(-T // bin_pixels)
    pad = ((0, 0), (0, nb * bin_pixels - T))
    w = np.pad(w, pad).reshape(B, nb, bin_pixels)
    f = np.pad(np.where(valid, flux, 0.0), pad).reshape(B, nb, bin_pixels)
    n_valid = np.pad(valid, pad).reshape(B, nb, bin_pixels).sum(axis=2)
    wsum = w.sum(axis=2)
    ok = (2 * n_valid >= bin_pixels) & (wsum > 0)
    fb = np.divide(np.einsum("bnk,bnk->bn", w, f), wsum, out=np.full((B, nb), np.nan), where=ok)
    return fb, np.where(ok, wsum, 0.0)


def prepare_batch(
    flux, weight=None, *, offset: float, washout: int, ids=None, dtype="float32", bin_pixels: int = 1
) -> Batch:
    """Inputs, step mask and targets of a batch (the masking rules of the module docstring).

    Parameters
    ----------
    flux, weight : array-like (B, T)
        Flux on the grid; inverse variance (None: every finite pixel valid).
    offset : float
        Subtracted from the flux before it drives the reservoir.
    washout : int
        Steps (of the binned series) after the first valid value left out of the regression.
    ids : sequence, optional
        Names of the series for error messages.
    dtype : str
        Of the shifted input ``u`` (the reservoir's state dtype).
    bin_pixels : int
        Pixels per step (:func:`bin_series`).

    Raises
    ------
    EmbeddingError
        Naming the spectrum id when a spectrum has no valid pixel, or too few
        valid steps after the washout.
    """
    flux = np.atleast_2d(np.asarray(flux, dtype="f8"))
    if weight is not None:
        weight = np.atleast_2d(np.asarray(weight))
        if weight.shape != flux.shape:
            raise EmbeddingError(f"weight shape {weight.shape} differs from flux shape {flux.shape}")
    ids = np.arange(len(flux)) if ids is None else np.asarray(ids)
    check_param(
        "washout", washout, isinstance(washout, numbers.Integral) and 0 <= washout, "must be a non-negative integer"
    )
    flux, weight = bin_series(flux, weight, bin_pixels)
    B, T = flux.shape
    if T < washout + 2:
        raise EmbeddingError(
            f"parameter washout={washout}: series of {T} steps are too short "
            f"(need at least washout + 2 = {washout + 2})"
        )
    u = np.empty((B, T), dtype)
    mask, y = np.empty((B, T)), np.empty((B, T))
    sums = np.empty((B, 4))  # yty, steps, persistence, first valid step (-1: none)
    weight = np.zeros((0, 0)) if weight is None else np.asarray(weight, dtype="f8")
    _masking_kernel()(flux, weight, float(offset), int(washout), u, mask, y, sums)
    empty = sums[:, 3] < 0
    if empty.any():
        bad = ", ".join(str(i) for i in ids[empty][:5])
        raise EmbeddingError(f"spectrum {bad}: no valid pixels (all NaN or zero weight)")
    n_steps = sums[:, 1].astype("i8")
    short = n_steps < 1
    if short.any():
        bad = ", ".join(str(i) for i in ids[short][:5])
        raise EmbeddingError(
            f"spectrum {bad}: no usable step after a washout of {washout} "
            f"(no two consecutive valid pixels past the washout)"
        )
    return Batch(u, mask, y, sums[:, 0], n_steps, sums[:, 2])


_CACHE: dict = {}


def _masking_kernel():
    """The masking rules of the module docstring in one compiled pass per spectrum (numba; releases the GIL).

    ``kernel(flux, weight, offset, washout, u, mask, y, sums)`` fills ``u``,
    ``mask``, ``y`` (B, T) and ``sums`` (B, 4: ``y^T y``, the number of steps,
    the persistence error, the first valid step or -1).  ``weight`` (0, 0)
    means none.  Compiled rather than NumPy because the embedder's threads
    spent ~50 us per spectrum in NumPy temporaries, partly holding the GIL.
    """
    if "masking" not in _CACHE:
        import numba

        @numba.njit(nogil=True, cache=True, error_model="numpy")
        def masking(flux, weight, offset, washout, u, mask, y, sums):
            B, T = flux.shape
            weighted = weight.shape[0] > 0
            for b in range(B):
                yty = 0.0
                n = 0.0
                pers = 0.0
                first = -1
                prev = False  # pixel t - 1 valid
                for t in range(T):
                    f = flux[b, t]
                    ok = np.isfinite(f) and (not weighted or weight[b, t] > 0)
                    u[b, t] = f - offset if ok else 0.0
                    if ok and first < 0:
                        first = t
                    if t > 0:  # step t - 1: input t - 1, target t
                        step = prev and ok and t - 1 >= first + washout
                        mask[b, t - 1] = 1.0 if step else 0.0
                        if step:
                            y[b, t - 1] = f
                            yty += f * f
                            d = f - flux[b, t - 1]
                            pers += d * d
                            n += 1.0
                        else:
                            y[b, t - 1] = 0.0
                    prev = ok
                mask[b, T - 1] = 0.0
                y[b, T - 1] = 0.0
                sums[b, 0] = yty
                sums[b, 1] = n
                sums[b, 2] = pers
                sums[b, 3] = first

        _CACHE["masking"] = masking
    return _CACHE["masking"]


def embeddable(flux, weight, *, washout: int, bin_pixels: int = 1) -> list[str | None]:
    """For each series: None when it can be embedded, else the reason (the :func:`prepare_batch` rule)."""
    flux = np.atleast_2d(np.asarray(flux, dtype="f8"))
    flux, weight = bin_series(flux, weight, bin_pixels)
    valid = valid_pixels(flux, weight)
    out: list[str | None] = []
    for v in valid:
        if not v.any():
            out.append("no valid pixels (all NaN or zero weight)")
            continue
        first = int(np.argmax(v))
        pairs = v[:-1] & v[1:]
        if not pairs[first + washout :].any():
            out.append(
                f"no usable step after a washout of {washout} (no two consecutive valid pixels past the washout)"
            )
        else:
            out.append(None)
    return out


def batch_statistics(
    flux,
    weight,
    reservoir: Reservoir,
    *,
    offset: float,
    washout: int,
    backend,
    ids=None,
    threads: int | None = None,
    bin_pixels: int = 1,
    out: tuple | None = None,
) -> ReadoutStatistics:
    """Statistics of a batch of spectra with a back end (the fast path); ``out``: the (gram, xty) arrays to fill
    (see :meth:`~latentsky.embed.backends.NumpyBackend.statistics`)."""
    b = prepare_batch(
        flux,
        weight,
        offset=offset,
        washout=washout,
        ids=ids,
        dtype=getattr(backend, "state_dtype", "float32"),
        bin_pixels=bin_pixels,
    )
    gram, xty = backend.statistics(b.u, b.mask, b.y, reservoir, threads=threads, out=out)
    return ReadoutStatistics(gram, xty, b.yty, b.n_steps, b.persistence)


def reference_statistics(
    flux, weight, reservoir: Reservoir, *, offset: float, washout: int, ids=None, bin_pixels: int = 1
) -> ReadoutStatistics:
    """The plain float64 path: one spectrum at a time, full design matrix.

    Slow by design; the tests hold the fast back ends to it, and the benchmark
    times it as the "plain NumPy loop".
    """
    b = prepare_batch(flux, weight, offset=offset, washout=washout, ids=ids, dtype="f8", bin_pixels=bin_pixels)
    parts = []
    for i in range(len(b.u)):
        X = reservoir.run(b.u[i])
        sel = b.mask[i] > 0
        Xd = np.hstack([X[sel], np.ones((sel.sum(), 1))])
        y = b.y[i, sel]
        parts.append(
            ReadoutStatistics(
                (Xd.T @ Xd)[None],
                (Xd.T @ y)[None],
                np.array([y @ y]),
                np.array([sel.sum()], dtype="i8"),
                b.persistence[i : i + 1],
            )
        )
    return ReadoutStatistics.concatenate(parts)


def one_step_prediction(
    reservoir: Reservoir, readout, flux, weight=None, *, offset: float, washout: int, bin_pixels: int = 1
) -> tuple[np.ndarray, float]:
    """A readout's one-step-ahead prediction of one spectrum, on the grid's pixels, and its error.

    Parameters
    ----------
    reservoir : Reservoir
    readout : array (N+1,)
        Reservoir weights then the bias weight.
    flux, weight : array (T,)
        The spectrum on the grid (weight: inverse variance, 0 masked; None: every finite pixel).
    offset, washout, bin_pixels :
        As the embedder that made the readout (an EMBEDDINGS directory's attributes).

    Returns
    -------
    model : ndarray (T,)
        At every valid pixel of a step ``t + 1`` that stage 1 fitted (both values valid, past the
        washout), the prediction ``[x_t, 1] . readout`` of that step (with ``bin_pixels > 1`` the same
        value over the bin's valid pixels: the prediction of the bin's mean flux); NaN elsewhere.
    error : float
        Mean squared residual over the fitted steps: the readout's data-space error.
    """
    w = np.asarray(readout, dtype="f8")
    flux = np.asarray(flux, dtype="f8").ravel()
    b = prepare_batch(
        flux[None],
        None if weight is None else np.asarray(weight)[None],
        offset=offset,
        washout=washout,
        dtype="f8",
        bin_pixels=bin_pixels,
    )
    pred = reservoir.run(b.u[0]) @ w[:-1] + w[-1]  # pred[t] predicts step t + 1
    fitted = b.mask[0] > 0
    per_step = np.full(len(pred), np.nan)
    per_step[1:][fitted[:-1]] = pred[:-1][fitted[:-1]]
    model = np.repeat(per_step, bin_pixels)[: flux.size]
    model[~valid_pixels(flux[None], None if weight is None else np.asarray(weight)[None])[0]] = np.nan
    resid = (pred - b.y[0])[fitted]
    return model, float(resid @ resid / max(len(resid), 1))
