"""The demo's first step: every sample spectrum queried and downloaded from the local archive, faults or not."""

from __future__ import annotations

import hashlib

from _support.archives import source_bytes

from latentsky.archives.local.mirror import mirror_local
from latentsky.ingest import find_fits


def test_mirror_gets_every_spectrum_byte_identical_despite_faults(sample, tmp_path):
    done = mirror_local(
        sample,
        tmp_path / "dl",
        fault_rate=0.15,
        seed=4,
        max_retries=10,
        faults=("500", "503", "429", "reset", "truncate", "html"),
    )
    sources = [p for p in find_fits([sample / "harps", sample / "sdss"])]
    assert not done.results.errors
    assert len(done.items) == len(sources) == len(done.eso) + len(done.sdss)
    downloaded = {hashlib.sha256(item.dest.read_bytes()).hexdigest() for item in done.items}
    for source in sources:  # every source arrives, unchanged
        assert hashlib.sha256(source_bytes(source)).hexdigest() in downloaded, source.name
    again = mirror_local(sample, tmp_path / "dl")
    assert len(again.results.skipped) == len(sources) and not again.results.done
