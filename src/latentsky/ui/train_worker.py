"""The Train step's worker process: ``latentsky pipeline`` with its progress events on stdout.

The app runs the pipeline (TensorFlow and all) in a child process, so that
cancel can stop it at once and the server never holds TensorFlow's memory.
This module is that child::

    python -m latentsky.ui.train_worker STORE OUT '{"train": {...}, "embed": {...}, "embeddings": PATH}'

Every :class:`~latentsky.progress.ProgressEvent` of the run (ingest, embed,
train, encode) is written to stdout as one line ``EVENT_PREFIX + JSON``; a
:class:`~latentsky.autoencoder.TrainingEvent` carries its epoch's losses under
``"logs"``, which is what the Train step draws as a live loss curve.  Other
output (warnings, TensorFlow's start-up lines) passes through as plain lines.
"""

from __future__ import annotations

import dataclasses
import json
import sys

EVENT_PREFIX = "latentsky-event "
"""Start of a stdout line carrying one progress event as JSON."""


def encode_event(event) -> str:
    """One progress event as a line of the worker's protocol (without the newline)."""
    return EVENT_PREFIX + json.dumps(dataclasses.asdict(event), default=float)


def decode_event(line: str):
    """The :class:`~latentsky.progress.ProgressEvent` (or ``TrainingEvent``, when it has losses) of a
    protocol line; None for any other line."""
    from latentsky.progress import ProgressEvent

    if not line.startswith(EVENT_PREFIX):
        return None
    fields = json.loads(line[len(EVENT_PREFIX) :])
    if "logs" in fields:
        from latentsky.autoencoder.estimator import TrainingEvent

        return TrainingEvent(**fields)
    return ProgressEvent(**fields)


def main(argv=None) -> int:
    from latentsky.pipeline import run_pipeline

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        sys.stderr.write("usage: python -m latentsky.ui.train_worker STORE OUT PARAMS_JSON\n")
        return 2
    store, out, params = argv[0], argv[1], json.loads(argv[2])

    def emit(event):
        sys.stdout.write(encode_event(event) + "\n")
        sys.stdout.flush()

    run_pipeline(
        store,
        out,
        embed=params.get("embed"),
        train=params.get("train"),
        embeddings=params.get("embeddings"),
        seed=int(params.get("seed", 0)),
        progress=emit,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
