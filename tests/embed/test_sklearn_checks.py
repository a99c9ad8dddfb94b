"""scikit-learn's estimator checks, where they apply.

A series needs at least washout + 2 steps; the checks use 2-20 "features"
(pixels), so the instances checked use washout=0, one pixel per step and a
small reservoir.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from latentsky.embed import ESNReadoutEmbedder

# Checks that cannot apply, and why.
EXPECTED_FAILED = {
    # One feature is a series of one step: there is no next value to predict.
    # We raise EmbeddingError (a ValueError) naming washout, not sklearn's wording.
    "check_fit2d_1feature": "a series of one step has no next value to predict",
    # With allow_nan the check sprinkles NaN (= masked pixels) into 3-step series until
    # some have no two consecutive valid values: such a series cannot be embedded and
    # raises EmbeddingError naming it, by design.  Pickling itself is tested in
    # test_esn.py::test_pickle_round_trip.
    "check_estimators_pickle": "series left with no valid step cannot be embedded (by design)",
}


@parametrize_with_checks(
    [
        ESNReadoutEmbedder(n_units=5, washout=0, bin_pixels=1, backend="numpy"),
        ESNReadoutEmbedder(n_units=4, washout=0, bin_pixels=1, reservoir="random", random_state=0, backend="numpy"),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
