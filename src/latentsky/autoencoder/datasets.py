"""The ``tf.data`` pipelines of minibatch training: rows prepared in memory, or streamed block by block.

:func:`make_dataset` serves :class:`~latentsky.autoencoder.estimator.LatentAutoencoder`'s
Adam path; the full-batch L-BFGS path needs no pipeline (all rows at once).
"""

from __future__ import annotations

import numpy as np


def make_dataset(
    source,
    mask: np.ndarray,
    *,
    batch_size: int,
    normalise: str,
    shuffle: bool,
    seed: int,
    statistics: bool,
    in_memory: bool,
    read_threads: int = 2,
):
    """A ``tf.data`` pipeline of batches over the rows where ``mask`` is True.

    Batches are dictionaries of float32 tensors: ``readout``, and with the
    statistics ``resid``, ``floor`` and ``gram``, the tuple of dense Gram
    blocks of :func:`~latentsky.autoencoder.coupled.gram_blocks`.

    In memory, the rows are prepared once into TensorFlow variables (one
    copy, filled block by block) and every batch is a ``tf.gather`` of
    shuffled row indices, all inside TensorFlow: no Python per batch.
    Streaming, blocks of rows are read in a shuffled order on worker
    threads, a few at a time, shuffled together and handed to ``tf.data``,
    which cuts them into batches and the Gram triangles into blocks: only
    those blocks of rows are in memory.
    """
    import tensorflow as tf

    from latentsky.autoencoder.coupled import gram_block_index, gram_blocks, split_gram

    batch = int(batch_size)
    blocks = [(s, e) for s, e in source.blocks() if mask[s:e].any()]
    m = source.m
    index = gram_block_index(m, gram_blocks(m))
    spec = {"readout": tf.TensorSpec((None, m), tf.float32)}
    if statistics:
        spec.update(
            gram=tuple(tf.TensorSpec((None, len(ix)), tf.float32) for ix in index),
            resid=tf.TensorSpec((None, m), tf.float32),
            floor=tf.TensorSpec((None,), tf.float32),
        )
    n_rows = int(sum(mask[s:e].sum() for s, e in blocks))
    n_batches = int(np.ceil(n_rows / batch))

    if in_memory:

        def read(s, e):
            part = source.read(s, e, np.flatnonzero(mask[s:e]), normalise=normalise, statistics=statistics)
            if statistics and not source.blocked_gram:
                part["gram"] = split_gram(part["gram"], index)
            return part

        def holder(sp):  # zeros are not written until assigned: one copy of the data in memory
            return tf.Variable(tf.zeros((n_rows,) + tuple(sp.shape[1:])), trainable=False)

        store = {k: [holder(x) for x in sp] if isinstance(sp, tuple) else holder(sp) for k, sp in spec.items()}
        at = 0
        for s, e in blocks:
            part = read(s, e)
            k = len(part["readout"])
            rows = tf.range(at, at + k)
            for key, v in part.items():
                for var, x in zip(store[key], v) if isinstance(v, tuple) else [(store[key], v)]:
                    # a scatter writes in place (a sliced assign here copied the whole variable first)
                    var.scatter_update(tf.IndexedSlices(x, rows))
            at += k

        def gather(rows):
            return {
                k: (tuple(tf.gather(x, rows) for x in v) if isinstance(v, list) else tf.gather(v, rows))
                for k, v in store.items()
            }

        ds = tf.data.Dataset.range(n_rows)
        if shuffle:
            ds = ds.shuffle(n_rows, seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch).map(gather).prefetch(2)

    rng = np.random.default_rng(seed)
    # read enough blocks at once to mix a few batches' worth of rows
    per_read = max(1, int(np.ceil(max(4 * batch, 2048) / source.block_rows)))
    ix = [tf.constant(i) for i in index]

    def read_group(keys, perm):
        """Rows of these blocks, prepared, joined and shuffled: on a worker thread."""
        if source.blocked_gram:  # the cache: read into one buffer, select and shuffle in one copy
            ranges = [blocks[k] for k in keys]
            return source.read_ranges(
                ranges, np.flatnonzero(np.concatenate([mask[s:e] for s, e in ranges]))[perm], statistics=statistics
            )
        parts = [
            source.read(*blocks[k], np.flatnonzero(mask[slice(*blocks[k])]), normalise=normalise, statistics=statistics)
            for k in keys
        ]
        return {k: np.concatenate([q[k] for q in parts])[perm] for k in parts[0]}

    def generate():
        from concurrent.futures import ThreadPoolExecutor

        order = rng.permutation(len(blocks)) if shuffle else np.arange(len(blocks))
        groups = [order[g : g + per_read] for g in range(0, len(order), per_read)]
        # the shuffles are drawn here, in order, so that the threads cannot change them
        sizes = [int(sum(mask[slice(*blocks[k])].sum() for k in g)) for g in groups]
        perms = [rng.permutation(n) if shuffle else np.arange(n) for n in sizes]
        # Read (decompress, prepare) the next groups on worker threads while this one is
        # trained on: Zarr's codecs and NumPy release the GIL.
        with ThreadPoolExecutor(max_workers=read_threads) as pool:
            pending = [
                pool.submit(read_group, g, q) for g, q in zip(groups[: read_threads + 1], perms[: read_threads + 1])
            ]
            for gi in range(len(groups)):
                group = pending[gi].result()
                pending[gi] = None
                nxt = gi + read_threads + 1
                if nxt < len(groups):
                    pending.append(pool.submit(read_group, groups[nxt], perms[nxt]))
                yield group

    def to_blocks(part):
        # the dense Gram blocks, cut in TensorFlow's threads (no Python, no GIL)
        return {**part, "gram": tuple(tf.gather(part["gram"], i, axis=1) for i in ix)}

    cut = statistics and not source.blocked_gram
    packed = dict(spec)
    if cut:
        packed["gram"] = tf.TensorSpec((None, m * (m + 1) // 2), tf.float32)
    # groups in, full batches out (every batch but the last of the epoch is full)
    ds = tf.data.Dataset.from_generator(generate, output_signature=packed).rebatch(batch)
    if cut:
        ds = ds.map(to_blocks, num_parallel_calls=2)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
    return ds.prefetch(2)
