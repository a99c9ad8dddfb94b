"""The pipeline's default hyper-parameters, chosen on the bundled sample.

One home for the settings `latentsky pipeline` (and `latentsky demo`) uses when
the caller gives none; bench/quality.py scores the map they make.

How they were chosen (the sample's repeated objects split in two halves by
name, as bench/quality.py prints them; settings picked on half A, half B
reported beside): stage 1 by the kNN purity by object of the 101-D readouts
themselves (leak rate 0.3 raises it from 0.49 to 0.74 at k = 1; ridge, input
scaling, cycle weight and bias moved it less), stage 2 by the purity of the
2-D maps over two seeds (k = 1 / k = 5, mean of seeds 0 and 1):

    neighbour_weight 1, 16 edges per spectrum   A 0.727/0.602   B 0.500/0.275
    neighbour_weight 3, 16 edges                A 0.739/0.598   B 0.458/0.292
    neighbour_weight 3, 32 edges (chosen)       A 0.773/0.598   B 0.500/0.317
    weight 1, min_dist 0.02                     A 0.739/0.593   B 0.375/0.283
    weight 1, n_neighbors 10                    A 0.716/0.589   B 0.375/0.296
    UMAP of the same readouts                   A 0.682/0.593   B 0.375/0.321

and leak 0.2 or 0.45 (input scaling 0.25) gave lower map purity (0.58-0.61 at
k = 1 overall).  The earlier settings (leak 1, no neighbour term) gave
0.43/0.40 overall.  The network's size was chosen later the same way, on the
layout phase alone over six seeds (0-5; the decoder phase does not move the
points), after the Keras loop had changed the shuffles (``steps_per_execution``):

    hidden (64,)                                A 0.705/0.594   B 0.479/0.310
    hidden (128,) (chosen)                      A 0.758/0.603   B 0.507/0.317
    hidden (256,)                               A 0.746/0.598   B 0.486/0.312
    hidden (64, 64)   [seeds 0-2]               A 0.758/0.595   B 0.458/0.308
    hidden (128, 128)                           A 0.750/0.594   B 0.472/0.319
    hidden (64,), neighbour_weight 6            A 0.716/0.600   B 0.486/0.312
    hidden (128,), neighbour_weight 6           A 0.746/0.599   B 0.458/0.317
    UMAP of the same readouts                   A 0.659/0.594   B 0.410/0.337

while the neighbour graph on cosine distances [seeds 0-2] (A 0.742/0.605, B
0.431/0.275), weight decay 1e-5, learning rate 3e-3 and ReLU units lost at
k = 5 on half B; with 128 units, negatives drawn uniformly from the spectra
(as umap-learn draws them, in place of other edges' tails: A 0.765/0.608, B
0.479/0.310) lost on B, and longer training (patience 150, 1,200 epochs) left
both halves where they were.  A heavier neighbour term traded k = 1 for k = 5:
weight 12 gave A 0.727/0.606, B 0.500/0.318, weight 30 A 0.750/0.612, B
0.444/0.310 (k = 5 within a seed's spread of weight 3's on both halves).

Later, on another machine of the same kind (its float rounding moves single
seeds: the defaults gave A 0.731/0.598, B 0.500/0.307 over seeds 0-5, UMAP A
0.727/0.597, B 0.424/0.319), none of these left the noise either (seeds 0-5):

    64 edges per spectrum                       A 0.777/0.603   B 0.479/0.315
    64 edges [seeds 0-19]                       A 0.766/0.602   B 0.488/0.312
    128 edges                                   A 0.761/0.597   B 0.493/0.312
    64 edges, neighbour_weight 6                A 0.765/0.600   B 0.493/0.318
    64 edges, n_neighbors 10                    A 0.754/0.595   B 0.417/0.312
    64 edges, min_dist 0.05                     A 0.750/0.598   B 0.486/0.321
    64 edges, weight decay 0 [seeds 0-4]        A 0.741/0.597   B 0.475/0.313
    n_neighbors 20                              A 0.727/0.604   B 0.493/0.315
    n_neighbors 25                              A 0.727/0.602   B 0.486/0.304
    UMAP of the same readouts [seeds 0-19]      A 0.700/0.599   B 0.429/0.336

(64 edges also doubles an epoch's time on 9,000 spectra, so it was not
taken.)  Over 20 seeds the 64-edge map trails UMAP at k = 5 by 0.007 +- 0.003
(0.4997 against 0.5063), all of it on half B: UMAP puts the twin of a pair
among a point's 5 nearest neighbours more often (0.71 of half B's pairs) than
the readouts' own 5 nearest neighbours hold it (0.63), and this map [seeds
0-4] no more often than the readouts; umap-learn's initialisation (spectral,
PCA or random) does not change that.  The standardised readouts themselves
have purity 0.735/0.515.

The next stop traced that gap to the optimiser.  umap-learn's own k = 5
purity falls from 0.511 to 0.496 with 200 epochs instead of 500 (10 seeds),
and our cross-entropy on free 2-D points (no encoder) reached only
0.496-0.501 with minibatch Adam or SGD, whatever the negatives, clipping or
linear annealing of the step.  So the layout phase now starts from
umap-learn's layout of the same neighbour graph (the encoder regressed onto
it) and refines it with a smaller step (layout phase alone, seeds 0-5):

    defaults before (random start, step 1e-2)   A 0.735/0.599   B 0.514/0.320
    step falling linearly to 0 [random start]   A 0.716/0.598   B 0.438/0.315
    negative_rate 2 [random start]              A 0.720/0.602   B 0.451/0.319
    negative_rate 10 [random start]             A 0.758/0.600   B 0.486/0.300
    umap start, layout step 3e-3                A 0.765/0.600   B 0.514/0.319
    umap start, layout step 1e-3 (chosen)       A 0.735/0.608   B 0.521/0.331
    umap start, layout step 3e-4                A 0.742/0.610   B 0.465/0.321
    umap start, step 1e-3, neighbour_weight 1   A 0.769/0.603   B 0.472/0.317
    umap start, step 1e-3, neighbour_weight 10  A 0.750/0.610   B 0.465/0.319
    UMAP of the same readouts                   A 0.670/0.594   B 0.389/0.354

(the step was chosen on both halves together, so half B is no longer held
out for it; umap-learn's layout run for 1,000 or 2,000 epochs gave 0.505 and
0.511 overall, against 0.510 for its default 500).  With the pipeline's
decoder phase, over 10 seeds (bench/quality.py): k = 1 0.646 against UMAP's
0.579 (+0.066 +- 0.015), k = 5 0.509 against 0.511 (-0.002 +- 0.003); the
data-space error rose from 0.0485 to 0.0500 (floor 0.0483), still below the
Euclidean autoencoder's 0.0540 and readout PCA's 0.0528.

A later stop traced what was left of the gap, on another machine of the
same kind (UMAP there: 0.604/0.507 over seeds 0-9, against 0.579/0.511
before), by scoring the map every few epochs of the layout phase (seeds 0-9,
layout phase alone).  The map regressed onto umap-learn's layout starts at
0.615/0.511; a few epochs of the neighbour term pull k = 5 down to 0.497 and
it climbs back.  Neither a decoder fitted before the refinement (500
full-batch steps) nor a step warmed up over 20 epochs stopped that dip or
changed where the refinement ended.  What it ends at is set by the readout
reconstruction term beside the neighbour term: it buys k = 1 and costs k = 5,

    neighbour_weight 3 (before)                 k1 0.653  k5 0.505  (A 0.608 B 0.316)
    reconstruction term off [diagnostic]        k1 0.635  k5 0.511  (A 0.612 B 0.326)
    neighbour_weight 30 (chosen)                k1 0.631  k5 0.512  (A 0.612 B 0.328)
    UMAP of the same readouts                   k1 0.604  k5 0.507  (A 0.602 B 0.333)

and on seeds 10-19, held out from that choice: weight 30 0.606/0.510, weight 3
0.643/0.508, UMAP 0.566/0.505.  With the pipeline's decoder phase
(bench/quality.py, seeds 0-9): k = 1 +0.027 +- 0.019 and k = 5 +0.005 +-
0.004 over UMAP; the data-space error rose from 0.0498 to 0.0509 (the
Euclidean autoencoder's 0.0545, readout PCA's 0.0528).
"""

from latentsky.embed.defaults import ESN_DEFAULTS


#: Stage-1 settings of the pipeline, of ``latentsky embed`` and of the app's Embed step: the
#: defaults of :class:`~latentsky.embed.esn.ESNReadoutEmbedder` itself (their one home,
#: :mod:`latentsky.embed.defaults`), less the settings of the machine (back end, threads,
#: batch sizes), which do not change results.
EMBED_DEFAULTS = dict(ESN_DEFAULTS)

#: Autoencoder settings of the pipeline, chosen on the bundled sample (see bench/quality.py).
#: ``validation_fraction`` None: 0.1 from 1,000 spectra on, else 0 (a map of a few hundred
#: spectra is fitted on all of them and stops when the training loss stalls).  The map is
#: laid out with the neighbour term on the Euclidean loss (``layout_loss``), then the
#: decoder is fitted to the model-coupled loss (for at most ``epochs`` more): with the
#: coupled loss in the layout phase too, purity by object fell to 0.44-0.50.  The layout
#: phase starts from umap-learn's layout of the same neighbour graph (``layout_init``) and
#: refines it with a step ten times smaller than the decoder's (``layout_learning_rate``),
#: with the neighbour term weighted 30 against the readout reconstruction's (``neighbour_weight``): a
#: heavier reconstruction term tightens repeats at k = 1 and loosens them at k = 5.
TRAIN_DEFAULTS = {"hidden": (128,), "learning_rate": 1e-2, "epochs": 600, "batch_size": 32,
                  "validation_fraction": None, "patience": 60, "weight_decay": 1e-4, "loss": "coupled",
                  "neighbour_weight": 30.0, "edges_per_spectrum": 32, "layout_loss": "euclidean",
                  "layout_init": "umap", "layout_learning_rate": 1e-3}

#: Spectra passed through the autoencoder per training phase, at most (spectra x epochs): on a
#: big training set the pipeline cuts ``epochs`` (and the patience of early stopping and of
#: the learning-rate schedule, in proportion) to this budget, at least :data:`MIN_EPOCHS`.
#: The bundled sample (125 spectra, 600 epochs = 75,000 visits) is untouched; the pipeline's
#: 10,000-spectrum training sample gets 56 epochs per phase (about 16,000 gradient steps,
#: 7x the sample's), which on 2 cores trains in minutes instead of an hour: an epoch of the
#: layout phase takes about 1.3 s there (9,000 spectra x 32 edges, batch 32, hidden 64 or 128).
TRAIN_VISITS = 500_000
#: Fewest epochs per phase the budget leaves.
MIN_EPOCHS = 30


def within_budget(params: dict, n_fit: int, visits: int | None = TRAIN_VISITS) -> dict:
    """``params`` (of :class:`~latentsky.autoencoder.estimator.LatentAutoencoder`) cut to ``visits``.

    Parameters
    ----------
    params : dict
        Training parameters with ``epochs`` and ``patience`` (``lr_patience``
        defaults to the estimator's 10).
    n_fit : int
        Spectra fitted on per epoch (the training rows less the validation ones).
    visits : int or None
        Spectra x epochs per phase, at most; None: no budget.

    Returns
    -------
    dict
        ``params`` itself when within the budget, else a copy with fewer
        ``epochs`` and proportionally shorter patiences.
    """
    if visits is None:
        return params
    cap = max(MIN_EPOCHS, -(-int(visits) // max(1, int(n_fit))))
    epochs = int(params["epochs"])
    if cap >= epochs:
        return params
    scale = cap / epochs
    out = {**params, "epochs": cap, "patience": max(3, round(int(params["patience"]) * scale)),
           "lr_patience": max(2, round(int(params.get("lr_patience", 10)) * scale))}
    if params.get("decoder_epochs") is not None:
        out["decoder_epochs"] = min(int(params["decoder_epochs"]), cap)
    return out
