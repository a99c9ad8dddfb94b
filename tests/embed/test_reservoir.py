import numpy as np
import pytest

from latentsky.embed.reservoir import Reservoir, pi_digits, pi_signs, random_sparse_reservoir, simple_cycle_reservoir
from latentsky.exceptions import EmbeddingError, LatentskyError


def test_pi_digits_are_pi():
    assert "".join(map(str, pi_digits(30))) == "314159265358979323846264338327"
    assert pi_signs(6).tolist() == [-1, -1, -1, -1, 1, 1]


def test_simple_cycle_is_a_scaled_cyclic_permutation():
    res = simple_cycle_reservoir(7, cycle_weight=0.8, input_scaling=0.3, bias=0.1)
    W = res.dense_matrix()
    assert np.allclose(np.abs(np.linalg.eigvals(W)), 0.8)  # spectral radius r, all on the circle
    x = np.random.default_rng(1).normal(size=(3, 7))
    assert np.allclose(res.recurrent(x), x @ W.T)  # roll == matrix product
    assert np.allclose(np.abs(res.input_weights), 0.3)
    assert np.allclose(res.bias, 0.1)
    # deterministic: no random state involved
    assert np.array_equal(res.input_weights, simple_cycle_reservoir(7, 0.8, 0.3, 0.1).input_weights)


def test_random_reservoir_spectral_radius_and_seed():
    a = random_sparse_reservoir(50, spectral_radius=0.7, density=0.2, random_state=3)
    b = random_sparse_reservoir(50, spectral_radius=0.7, density=0.2, random_state=3)
    c = random_sparse_reservoir(50, spectral_radius=0.7, density=0.2, random_state=4)
    assert np.isclose(np.max(np.abs(np.linalg.eigvals(a.matrix))), 0.7)
    assert np.array_equal(a.matrix, b.matrix) and not np.array_equal(a.matrix, c.matrix)
    assert 0.1 < np.mean(a.matrix != 0) < 0.3


def test_round_trip_dict():
    for res in (simple_cycle_reservoir(5, leak_rate=0.5), random_sparse_reservoir(5, random_state=0)):
        back = Reservoir.from_dict(res.to_dict())
        u = np.linspace(-1, 1, 30)
        assert np.array_equal(back.run(u), res.run(u))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"cycle_weight": 1.0}, "cycle_weight"),
        ({"n_units": 0}, "n_units"),
        ({"leak_rate": 0.0}, "leak_rate"),
        ({"input_scaling": np.nan}, "input_scaling"),
        ({"bias": np.inf}, "bias"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(EmbeddingError, match=name) as err:
        simple_cycle_reservoir(**kwargs)
    assert isinstance(err.value, LatentskyError)
