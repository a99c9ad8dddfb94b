"""Reservoirs for echo-state-network embeddings.

A reservoir is the fixed, untrained half of an echo-state network: the
recurrent matrix ``W``, the input weights ``V`` and a bias ``b``.  Driven by a
series ``u`` (here: normalised flux along the log-lambda grid) its state is::

    x_t = a * tanh(W x_{t-1} + V u_t + P p_t + b) + (1 - a) * x_{t-1}

with leak rate ``a`` (Gianniotis et al. 2016, eq. 1).  ``p_t`` is an optional
second input, ours: the position along the series, -1 at its first step and +1
at its last, i.e. the normalised log-wavelength on a log-lambda grid (the same
for every spectrum).  With ``P = 0`` (the default) it is the reservoir of the
paper; with ``P != 0`` the states, and so a readout, depend on *where* along
the spectrum a feature sits, not only on the flux just before it.  Two kinds
are provided:

* the **simple cycle reservoir** (Rodan & Tino 2011, the default): ``W`` is a
  cyclic permutation scaled by one cycle weight ``r``, so ``W x`` is
  ``r * roll(x, 1)``: no matrix product is needed.  Every input weight has
  the same magnitude ``v``; the signs follow the decimal digits of pi (digit
  < 5 gives -1), a fixed, deterministic, aperiodic pattern; the position
  weights ``+-s`` take their signs from the next ``N`` digits, so the
  reservoir is fully determined by ``(N, r, v, s, b, a)``;
* a **random sparse reservoir** with a given spectral radius, input weights
  ``+-v`` and ``+-s`` with random signs; it depends on ``random_state``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from latentsky.embed._errors import check_param


@functools.lru_cache(maxsize=8)
def pi_digits(n: int) -> tuple[int, ...]:
    """The first ``n`` decimal digits of pi (3, 1, 4, 1, 5, ...).

    Gibbons' unbounded spigot; exact integer arithmetic, so the pattern is the
    same on every machine.
    """
    check_param("n", n, n >= 1, "must be >= 1")
    digits: list[int] = []
    q, r, t, k, m, x = 1, 0, 1, 1, 3, 3
    while len(digits) < n:
        if 4 * q + r - t < m * t:
            digits.append(m)
            q, r, m = 10 * q, 10 * (r - m * t), (10 * (3 * q + r)) // t - 10 * m
        else:
            q, r, t, k, m, x = q * k, (2 * q + r) * x, t * x, k + 1, (q * (7 * k + 2) + r * x) // (t * x), x + 2
    return tuple(digits)


def pi_signs(n: int, start: int = 0) -> np.ndarray:
    """Input-weight signs from digits ``start .. start+n-1`` of pi: -1 for digits 0-4, +1 for 5-9."""
    return np.where(np.asarray(pi_digits(start + n)[start:]) < 5, -1.0, 1.0)


def position_signal(n_steps: int) -> np.ndarray:
    """The second input ``p_t``: -1 at the first step, +1 at the last (float64, shape (n_steps,))."""
    return np.linspace(-1.0, 1.0, int(n_steps)) if n_steps > 1 else np.zeros(int(n_steps))


@dataclasses.dataclass(frozen=True, eq=False)
class Reservoir:
    """A frozen reservoir (see the module docstring for the state equation).

    Attributes
    ----------
    kind : {"cycle", "random"}
        Simple cycle or random sparse.
    n_units : int
        Number of reservoir units ``N``.
    cycle_weight : float
        ``r`` of the simple cycle (for ``"random"``: its spectral radius).
    input_weights : ndarray (N,)
        ``V``, float64.
    bias : ndarray (N,)
        ``b``, float64.
    leak_rate : float
        ``a`` in (0, 1]; 1 means no leak.
    matrix : ndarray (N, N) or None
        The recurrent matrix ``W`` of a random reservoir; None for the cycle,
        whose ``W x`` is ``cycle_weight * roll(x, 1)``.
    position_weights : ndarray (N,) or None
        ``P``, the weights of the position input :func:`position_signal`;
        None: no second input.
    """

    kind: str
    n_units: int
    cycle_weight: float
    input_weights: np.ndarray
    bias: np.ndarray
    leak_rate: float = 1.0
    matrix: np.ndarray | None = None
    position_weights: np.ndarray | None = None

    def drive_offset(self, n_steps: int) -> np.ndarray | None:
        """``P p_t + b`` for every step, (n_steps, N) float64, or None without a position input.

        What the back ends add to ``V u_t`` in place of the constant bias.
        """
        if self.position_weights is None:
            return None
        return position_signal(n_steps)[:, None] * self.position_weights + self.bias

    def recurrent(self, x: np.ndarray) -> np.ndarray:
        """``W x`` for a batch of states ``x`` (..., N)."""
        if self.matrix is None:
            return self.cycle_weight * np.roll(x, 1, axis=-1)
        return x @ self.matrix.T

    def dense_matrix(self) -> np.ndarray:
        """``W`` as a dense (N, N) float64 matrix."""
        if self.matrix is not None:
            return np.array(self.matrix, dtype="f8")
        return self.cycle_weight * np.roll(np.eye(self.n_units), 1, axis=0)

    def run(self, u: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
        """Drive the reservoir with one series in float64, one step at a time.

        This is the plain reference implementation (slow); the back ends in
        :mod:`latentsky.embed.backends` are the fast, batched ones.

        Parameters
        ----------
        u : ndarray (T,)
            The input series, already shifted by the input offset.
        x0 : ndarray (N,), optional
            Initial state (zeros).

        Returns
        -------
        ndarray (T, N)
            The state after each input.
        """
        u = np.asarray(u, dtype="f8")
        W = self.dense_matrix()
        a = self.leak_rate
        x = np.zeros(self.n_units) if x0 is None else np.asarray(x0, dtype="f8")
        out = np.empty((len(u), self.n_units))
        offset = self.drive_offset(len(u))
        for t, ut in enumerate(u):
            b = self.bias if offset is None else offset[t]
            x = a * np.tanh(W @ x + self.input_weights * ut + b) + (1.0 - a) * x
            out[t] = x
        return out

    def to_dict(self) -> dict:
        """The defining parameters, JSON-serialisable (for lineage)."""
        d = {
            "kind": self.kind,
            "n_units": self.n_units,
            "cycle_weight": self.cycle_weight,
            "input_weights": self.input_weights.tolist(),
            "bias": self.bias.tolist(),
            "leak_rate": self.leak_rate,
        }
        if self.matrix is not None:
            d["matrix"] = self.matrix.tolist()
        if self.position_weights is not None:
            d["position_weights"] = self.position_weights.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Reservoir":
        """Inverse of :meth:`to_dict`."""
        m, p = d.get("matrix"), d.get("position_weights")
        return cls(
            d["kind"],
            int(d["n_units"]),
            float(d["cycle_weight"]),
            np.asarray(d["input_weights"], dtype="f8"),
            np.asarray(d["bias"], dtype="f8"),
            float(d["leak_rate"]),
            None if m is None else np.asarray(m, dtype="f8"),
            None if p is None else np.asarray(p, dtype="f8"),
        )


def _check_common(n_units, input_scaling, leak_rate, position_scaling=0.0):
    check_param(
        "n_units", n_units, isinstance(n_units, (int, np.integer)) and n_units >= 1, "must be a positive integer"
    )
    check_param("input_scaling", input_scaling, np.isfinite(input_scaling), "must be finite")
    check_param("leak_rate", leak_rate, 0.0 < leak_rate <= 1.0, "must be in (0, 1]")
    check_param("position_scaling", position_scaling, np.isfinite(position_scaling), "must be finite")


def simple_cycle_reservoir(
    n_units: int = 100,
    cycle_weight: float = 0.9,
    input_scaling: float = 0.5,
    bias: float = 0.0,
    leak_rate: float = 1.0,
    position_scaling: float = 0.0,
) -> Reservoir:
    """The deterministic simple cycle reservoir of Rodan & Tino (2011).

    Parameters
    ----------
    n_units : int
        Reservoir size ``N``.
    cycle_weight : float
        ``r``: every unit feeds the next with this weight; it is also the
        spectral radius of ``W``.  Needs ``|r| < 1`` for the echo-state property.
    input_scaling : float
        ``v``: magnitude of every input weight; signs follow the digits of pi.
    bias : float
        ``b``: the same bias on every unit.
    leak_rate : float
        ``a`` in (0, 1].
    position_scaling : float
        ``s``: magnitude of every weight of the position input (0: none); signs
        follow the digits of pi after those of the input weights.
    """
    _check_common(n_units, input_scaling, leak_rate, position_scaling)
    check_param(
        "cycle_weight",
        cycle_weight,
        np.isfinite(cycle_weight) and abs(cycle_weight) < 1.0,
        "must satisfy |r| < 1 (echo-state property)",
    )
    check_param("bias", bias, np.isfinite(bias), "must be finite")
    n = int(n_units)
    position = float(position_scaling) * pi_signs(n, start=n) if position_scaling else None
    return Reservoir(
        "cycle",
        n,
        float(cycle_weight),
        float(input_scaling) * pi_signs(n),
        np.full(n, float(bias)),
        float(leak_rate),
        None,
        position,
    )


def random_sparse_reservoir(
    n_units: int = 100,
    spectral_radius: float = 0.9,
    input_scaling: float = 0.5,
    bias: float = 0.0,
    leak_rate: float = 1.0,
    density: float = 0.1,
    random_state=None,
    position_scaling: float = 0.0,
) -> Reservoir:
    """A random sparse reservoir rescaled to a given spectral radius.

    Parameters
    ----------
    n_units : int
        Reservoir size ``N``.
    spectral_radius : float
        Largest absolute eigenvalue of ``W`` after rescaling.
    input_scaling : float
        Magnitude ``v`` of the input weights (random signs).
    bias : float
        Bias magnitude; each unit gets ``+-bias`` with a random sign.
    leak_rate : float
        ``a`` in (0, 1].
    density : float
        Fraction of non-zero entries of ``W``, in (0, 1].
    random_state : int, RandomState or None
        Seed; the same seed gives the same reservoir.
    position_scaling : float
        Magnitude of the position input's weights (random signs; 0: none).
    """
    from sklearn.utils import check_random_state

    _check_common(n_units, input_scaling, leak_rate, position_scaling)
    check_param(
        "spectral_radius",
        spectral_radius,
        np.isfinite(spectral_radius) and 0.0 <= spectral_radius,
        "must be finite and >= 0",
    )
    check_param("density", density, 0.0 < density <= 1.0, "must be in (0, 1]")
    rng = check_random_state(random_state)
    n = int(n_units)
    W = rng.uniform(-1.0, 1.0, (n, n)) * (rng.uniform(size=(n, n)) < density)
    rho = np.max(np.abs(np.linalg.eigvals(W))) if n > 0 else 0.0
    # A degenerate draw (all zeros, or nilpotent) has no spectral radius to rescale.
    W = W * (spectral_radius / rho) if rho > 1e-12 else W
    signs = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)
    bsign = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)
    psign = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)  # drawn last: older seeds give the same W, V, b
    return Reservoir(
        "random",
        n,
        float(spectral_radius),
        float(input_scaling) * signs,
        float(bias) * bsign,
        float(leak_rate),
        W,
        float(position_scaling) * psign if position_scaling else None,
    )
