"""The reconstruction drawn over a tapped spectrum of the autoencoder's map.

The autoencoder maps a spectrum's stage-1 readout ``w`` (the weights of one
echo-state network, :mod:`latentsky.embed`) to a latent point and decodes the
point back to a readout ``w_rec``.  A readout is not a spectrum: what it
reconstructs is the reservoir's *one-step-ahead prediction* of the flux,
``[x_t, 1] . w_rec`` for the reservoir state ``x_t`` driven by the spectrum
up to pixel ``t``.  That prediction's squared error, averaged over the steps
stage 1 fitted, is exactly the data-space error the model-coupled loss
minimises and ``latent.parquet``'s ``recon_error`` column records; so the
curve drawn is what the map is scored on, not a picture made for the app.

The reservoir is rebuilt from the embeddings' saved definition
(:meth:`latentsky.embed.layout.Embeddings.reservoir`) and run in float64,
one spectrum per tap (~20 ms for 4,096 pixels and 100 units).  The model
(TensorFlow) is loaded on the first use, or ahead of it by :meth:`load` in a
background thread (what a served app does, so the first tap does not wait).

Prepared results (``latentsky classroom --prepare-only``) also hold every
row's decoded readout (:data:`DECODED_FILE`, written by :func:`write_decoded`):
an app opened on them draws the same curves without loading TensorFlow at
all (about 600 MB less per app process; a Binder session has 2 GB).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from latentsky.exceptions import LatentskyError

log = logging.getLogger(__name__)

DECODED_FILE = "decoded_readouts.npz"
"""File, beside ``model.keras``, holding the decoder's readout of every row's latent point (``id``, ``readout``)."""


class ReadoutReconstruction:
    """``reconstruct(row, flux, weight)``: the autoencoder's data-space reconstruction of one spectrum.

    Parameters
    ----------
    model : path-like
        The trained :class:`~latentsky.autoencoder.LatentAutoencoder` (``DIR/model.keras``).
    embeddings : path-like
        The stage-1 EMBEDDINGS directory the model was trained on (``DIR/embeddings``): its reservoir,
        input offset and washout.
    latent_columns : sequence of str, optional
        Table columns holding the latent point, in the model's order (default ``x, y, z2, z3...``,
        as many as the model has latent dimensions).
    """

    def __init__(self, model, embeddings, *, latent_columns=None, decoded=None):
        from latentsky.embed.layout import open_embeddings

        self.model_path = Path(model)
        self.decoded: dict[str, np.ndarray] = {}
        if decoded is not None and Path(decoded).is_file():
            try:
                with np.load(decoded, allow_pickle=False) as f:
                    self.decoded = dict(zip(f["id"].astype(str), f["readout"], strict=True))
            except (OSError, ValueError, KeyError) as err:  # unreadable: decode with the model instead
                log.warning("%s: cannot read the prepared readouts (%s); the model decodes each tap", decoded, err)
        if not self.model_path.is_file():
            raise LatentskyError(f"{self.model_path}: no trained model here")
        emb = open_embeddings(embeddings)
        self.reservoir = emb.reservoir
        self.offset = float(emb.attrs["offset"])
        self.washout = int(emb.attrs["washout"])
        self.bin_pixels = int(emb.attrs.get("bin_pixels", 1))
        self.latent_columns = None if latent_columns is None else list(latent_columns)
        self._model = None
        self._lock = threading.Lock()

    def load(self):
        """The trained estimator (loaded once; thread-safe)."""
        with self._lock:
            if self._model is None:
                from latentsky.autoencoder import LatentAutoencoder

                self._model = LatentAutoencoder.load(self.model_path)
            return self._model

    def load_in_background(self) -> threading.Thread:
        """Load the model in a daemon thread (TensorFlow's import takes seconds), so a first tap need not;
        nothing to load when every row's decoded readout was prepared."""
        thread = threading.Thread(target=None if self.decoded else self.load, daemon=True, name="latentsky-load-model")
        thread.start()
        return thread

    def latent_point(self, row: pd.Series) -> np.ndarray:
        """The row's latent coordinates, shape (n_latent,)."""
        n = self.load().model_.n_latent
        cols = self.latent_columns or ["x", "y"] + [f"z{d}" for d in range(2, n)]
        missing = [c for c in cols[:n] if c not in row.index]
        if missing:
            raise LatentskyError(f"latent table: no column {missing[0]!r} for the model's {n} latent dimensions")
        return np.asarray([float(row[c]) for c in cols[:n]], dtype="f8")

    def predict(self, readout, flux, weight=None) -> tuple[np.ndarray, float]:
        """One-step-ahead prediction of ``flux`` by a readout, and its mean squared error per step.

        Parameters
        ----------
        readout : array (N+1,)
            Reservoir weights then the bias weight.
        flux : array (T,)
            Normalised flux on the store's grid.
        weight : array (T,), optional
            Inverse variance (0: masked).

        Returns
        -------
        model : ndarray (T,)
            ``model[t+1] = [x_t, 1] . readout`` where stage 1 fitted step ``t`` (both pixels valid, past
            the washout), NaN elsewhere (nothing is predicted for pixel 0 or into a gap); with binned
            stage-1 steps, each bin's prediction over its pixels
            (:func:`latentsky.embed.series.one_step_prediction`).
        error : float
            Mean of the squared residual over those steps (normalised flux squared): the data-space
            error of the readout.
        """
        from latentsky.embed.series import one_step_prediction

        w = np.asarray(readout, dtype="f8")
        if w.shape != (self.reservoir.n_units + 1,):
            raise LatentskyError(f"readout: expected {self.reservoir.n_units + 1} weights, got shape {w.shape}")
        return one_step_prediction(
            self.reservoir, w, flux, weight, offset=self.offset, washout=self.washout, bin_pixels=self.bin_pixels
        )

    def __call__(self, row: pd.Series, flux, weight=None) -> tuple[np.ndarray, str]:
        """The reconstruction of the row's spectrum from its latent point, and its legend label."""
        w_rec = self.decoded.get(str(row.get("id")))
        if w_rec is None:
            w_rec = self.load().inverse_transform(self.latent_point(row)[None])[0]
        model, error = self.predict(w_rec, flux, weight)
        return model, f"reconstruction from the latent point (MSE {error:.3g})"


def write_decoded(folder) -> Path:
    """Decode every row's latent point of a pipeline folder once and save the readouts (:data:`DECODED_FILE`),
    so apps opened on the folder need no TensorFlow.  Skipped when the file is newer than the model."""
    folder = Path(folder)
    path = folder / DECODED_FILE
    model = folder / "model.keras"
    if path.is_file() and path.stat().st_mtime >= model.stat().st_mtime:
        return path
    table = pd.read_parquet(folder / "latent.parquet")
    recon = ReadoutReconstruction(model, folder / "embeddings")
    n = recon.load().model_.n_latent
    cols = ["x", "y"] + [f"z{d}" for d in range(2, n)]
    readouts = recon.load().inverse_transform(table[cols[:n]].to_numpy("f8"))
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, id=np.asarray(table["id"].astype(str).tolist(), dtype="U"), readout=readouts)
    tmp.replace(path)
    return path
