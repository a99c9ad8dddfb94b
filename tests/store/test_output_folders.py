"""Output folders: only latentsky's own outputs of the same kind are replaced, never an input; one writer each;
a killed run's temporary folders are cleaned up by the next."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from _support.signals import popen_interruptible

from latentsky.cli import main
from latentsky.exceptions import LatentskyError
from latentsky.store import PartialDirectory, SpectrumStore


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def victim(tmp_path, sample):
    """A user's folder: two real FITS spectra and a thesis."""
    folder = tmp_path / "victim"
    (folder / "notes").mkdir(parents=True)
    for p in sorted((sample / "harps").glob("*.fits.gz"))[:2]:
        shutil.copy(p, folder / p.name)
    (folder / "notes" / "thesis.txt").write_text("three years of work")
    return folder


def test_ingest_into_its_own_input_is_refused_and_deletes_nothing(victim, capsys):
    before = _snapshot(victim)
    assert main(["ingest", str(victim), "--out", str(victim), "--pixels", "256"]) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "input" in err and "Traceback" not in err
    assert _snapshot(victim) == before
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim"]  # no lock, no temporary folder


def test_a_folder_latentsky_did_not_write_is_never_replaced(victim, tmp_path, sample, capsys):
    before = _snapshot(victim)
    src = sorted((sample / "harps").glob("*.fits.gz"))[2]
    for argv in (
        ["ingest", str(src), "--out", str(victim), "--pixels", "256"],
        ["synth", "--n", "100", "--out", str(victim), "--no-progress"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{victim}: not a folder latentsky wrote" in err
    assert _snapshot(victim) == before
    # a store is replaced by a store only: not by embeddings, and never by its own embeddings
    store = tmp_path / "store"
    assert main(["ingest", str(src), "--out", str(store), "--pixels", "256"]) == 0
    assert main(["embed", str(store), "--out", str(store)]) == 2
    assert "is an input of this run" in capsys.readouterr().err
    other = tmp_path / "other"
    assert main(["ingest", str(src), "--out", str(other), "--pixels", "256"]) == 0
    assert main(["embed", str(store), "--out", str(other), "--n-units", "4"]) == 2
    assert f"{other}: holds latentsky spectra, not embeddings" in capsys.readouterr().err
    assert len(SpectrumStore(other)) == 1
    # an input inside the output folder would go with it
    extra = store / "extra"
    extra.mkdir()
    shutil.copy(src, extra / src.name)
    assert main(["ingest", str(extra), "--out", str(store), "--pixels", "256"]) == 2
    assert f"{store}: holds {extra}" in capsys.readouterr().err
    assert (extra / src.name).is_file()


def test_stores_from_before_markers_are_still_recognised(tmp_path, sample):
    from latentsky.ingest import ingest
    from latentsky.store.output import MARKER

    files = sorted((sample / "harps").glob("*.fits.gz"))[:2]
    out = tmp_path / "store"
    ingest(files[:1], out)
    (out / MARKER).unlink()  # as written by an older latentsky: its lineage says what it is
    assert ingest(files, out).n_spectra == 2
    assert (out / MARKER).is_file()


def test_a_corrupt_lineage_in_the_output_is_reported_and_the_store_rewritten(tmp_path, sample, caplog):
    from latentsky.ingest import ingest

    files = sorted((sample / "harps").glob("*.fits.gz"))[:2]
    out = tmp_path / "store"
    ingest(files, out)
    (out / "lineage.json").write_text('{"step": "ingest", "par')
    result = ingest(files, out)
    assert result.n_spectra == 2 and not result.up_to_date
    assert "lineage.json: unreadable lineage" in caplog.text
    assert SpectrumStore(out).lineage["step"] == "ingest"


HOLDER = textwrap.dedent("""
    import sys, time
    from latentsky.store import atomic_directory
    with atomic_directory(sys.argv[1]) as tmp:
        (tmp / "half-written").write_text("x")
        print(tmp, flush=True)
        time.sleep(120)
""")


def test_a_second_writer_is_refused_and_a_killed_ones_leftovers_are_removed(tmp_path, sample, capsys):
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        tmp = holder.stdout.readline().strip()
        assert tmp, "the holder never started"
        src = sorted((sample / "harps").glob("*.fits.gz"))[0]
        argv = ["ingest", str(src), "--out", str(out), "--pixels", "256"]
        assert main(argv) == 2
        assert f"another latentsky run (process {holder.pid}) is writing this output" in capsys.readouterr().err
        assert os.path.isdir(tmp) and os.path.basename(tmp).startswith(f".store.tmp-{holder.pid}-")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert main(argv) == 0  # the lock died with its holder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # its temporary folder too
    assert len(SpectrumStore(out)) == 1


def test_a_running_writers_partial_output_is_never_taken(tmp_path):
    dest = tmp_path / "encoded"
    first = PartialDirectory(dest, "key-1")
    first.mark(0)
    with pytest.raises(LatentskyError, match=f"{dest}: another latentsky run \\(process {os.getpid()}\\)"):
        PartialDirectory(dest, "key-2")
    assert first.done() == {0}
    first.close()  # as if killed: the partial output stays for the next run to adopt
    with PartialDirectory(dest, "key-1") as again:
        assert again.resumed and again.done() == {0} and again.path != first.path
        assert again.path.name.startswith(f".encoded.partial-{os.getpid()}-") and not first.path.exists()


def test_the_app_forms_refuse_a_foreign_out_folder_in_the_form(victim, sample_store, tmp_path):
    pytest.importorskip("panel")
    from latentsky.ui.steps import Embed, Train

    before = _snapshot(victim)
    e = Embed(source=str(victim), out=str(victim), n_units=8)
    e.run()
    assert e.error.startswith(f"{victim}: is an input of this run") and e.store == ""
    e = Embed(source=str(victim), out=str(tmp_path / "store"), embeddings=str(victim), n_units=8)
    e.run()
    assert e.error.startswith(f"{victim}: ") and not (tmp_path / "store").exists()
    t = Train(store=str(sample_store.path), out=str(victim), method="pca")
    t.run()
    assert t.error.startswith(f"{victim}: not a folder latentsky wrote") and t.results is None
    assert _snapshot(victim) == before


def test_pipeline_refuses_a_foreign_or_input_folder_before_any_work(victim, sample_store):
    from latentsky.pipeline import run_pipeline

    before = _snapshot(victim)
    with pytest.raises(LatentskyError, match="not a folder latentsky wrote"):
        run_pipeline(sample_store.path, victim)
    with pytest.raises(LatentskyError, match="is an input of this run"):
        run_pipeline(victim, victim)
    assert _snapshot(victim) == before and sorted(p.name for p in victim.parent.iterdir()) == ["victim"]


def test_ctrl_c_during_ingest_keeps_the_previous_store_and_says_so(tmp_path, sample):
    import time

    files = sorted((sample / "harps").glob("*.fits.gz"))[:3]
    out = tmp_path / "store"
    assert main(["ingest", str(files[0]), "--out", str(out), "--pixels", "256"]) == 0
    before = _snapshot(out)
    cmd = [sys.executable, "-m", "latentsky.cli", "ingest", str(sample), "--out", str(out), "--pixels", "256"]
    proc = popen_interruptible(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".store.tmp-*")):  # the new store is being written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"nothing was written to {out}" in err and "Run the same command" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"] and _snapshot(out) == before
