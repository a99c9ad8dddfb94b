"""Download throughput: our manager against a plain sequential loop, same server, same faults.

Serves N files of about 100 kB (real SDSS spectra from ../shared/data, or the
bundled sample's, cut to size, still valid FITS)
from the local archive with a fixed latency (50 ms) and a fraction of faulty
answers (10 %, every kind the server knows), then downloads them

1. with :class:`latentsky.download.DownloadManager` (concurrency C, retries,
   verification, manifest), and
2. with a plain sequential loop of the kind the seed's script used
   (astroquery-style: one ``requests`` GET after another into the final file,
   a few immediate retries on errors, no verification).

Prints files/s for both, the speed-up, the files lost or corrupt (checked
byte for byte against the source), and the fraction of the bound set by
latency and concurrency, ``C / latency`` files/s.  The sequential loop is
timed on a subset (``--seq-files``) and extrapolated to N, as its output says.
Also the CPU time our client spent per file and the server per request (ms;
less sensitive to other work on the machine than the rates).

The figures are given for this CPU's native instruction set and again with
AVX2 forced, in a child process (``--isa``, see ``bench/_cpu.py``); the CPU
model and each pass's instruction set are printed.  The last line is one
JSON object (the AVX2 pass's figures under ``"avx2"``).

Usage::

    python bench/download.py                 # 10,000 files (about 1 GB written), both passes
    python bench/download.py --files 1000    # quicker
    python bench/download.py --isa native    # this CPU's instruction set only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

if str(REPO / "bench") not in sys.path:  # imported as a module (bench/soak.py): _cpu beside it
    sys.path.append(str(REPO / "bench"))

import _cpu  # noqa: E402

from latentsky.archives.local.server import FAULT_KINDS, LocalServer, Response  # noqa: E402
from latentsky.download import DownloadItem, DownloadManager  # noqa: E402


def make_sources(folder: Path, n_distinct: int, target: int) -> list[Path]:
    """``n_distinct`` real FITS files of about ``target`` bytes, cut from real SDSS spectra."""
    from astropy.io import fits

    data_dir = Path(os.environ.get("LATENTSKY_SHARED_DATA", REPO.parent / "shared" / "data")) / "sdss" / "spectra"
    originals = sorted(data_dir.glob("spec-*.fits"))
    if not originals:  # without the shared data: the bundled sample's SDSS spectrum (old spSpec format)
        from latentsky.data import sample_path

        originals = sorted(Path(sample_path()).rglob("spSpec-*.fit*"))
    if not originals:
        raise SystemExit("no SDSS spectra found (../shared/data/sdss/spectra or the bundled sample)")
    out = []
    for i in range(n_distinct):
        src = originals[i % len(originals)]
        path = folder / f"src{i:03d}.fits"
        with fits.open(src) as hdul:
            if hdul[0].data is None:  # spec-*.fits: empty primary + coadd table; keep the first rows
                primary = fits.PrimaryHDU(header=hdul[0].header)
                table = hdul[1]
                row = table.data.itemsize
                head = len(primary.header.tostring()) + len(table.header.tostring()) + 2 * 2880
                rows = max(1, (target - head) // row - i)  # slightly different sizes
                hdus = [primary, fits.BinTableHDU(table.data[:rows], header=table.header)]
            else:  # spSpec-*.fit: flux, error, mask... rows in the primary image; keep the first pixels
                data = hdul[0].data
                head = len(hdul[0].header.tostring()) + 2880
                cols = max(1, (target - head) // (data.shape[0] * data.itemsize) - i)
                hdus = [fits.PrimaryHDU(data[:, :cols], header=hdul[0].header)]
            fits.HDUList(hdus).writeto(path, overwrite=True)
        out.append(path)
    return out


def bench_server(sources, latency, fault_rate, seed, retry_after) -> LocalServer:
    """The local archive with /bench/f<i>.fits -> sources[i % n], faults of every kind (not started)."""
    server = LocalServer(
        latency=latency,
        fault_rate=fault_rate,
        faults=FAULT_KINDS,
        seed=seed,
        retry_after=retry_after,
        fault_latency=0.15,
    )

    def handler(request):
        i = int(request.path_params["name"][1:].split(".")[0])
        return Response.from_file(sources[i % len(sources)])

    server.add_route("GET", "/bench/{name}", handler)
    return server


def _serve(sources, latency, fault_rate, seed, retry_after, queue):
    """Child process: :func:`bench_server`, serving until terminated."""
    server = bench_server(sources, latency, fault_rate, seed, retry_after)
    queue.put(server.base_url)
    server.serve_forever()


def sequential(urls: list[str], dest: Path, timeout: float) -> float:
    """The seed's way: one file after another, straight into its final name."""
    dest.mkdir(parents=True, exist_ok=True)
    session = requests.Session()
    t0 = time.monotonic()
    for url in urls:
        path = dest / url.rsplit("/", 1)[1]
        for _ in range(3):
            try:
                r = session.get(url, timeout=timeout, stream=True)
                r.raise_for_status()
                with open(path, "wb") as fh:
                    for chunk in r.iter_content(65536):
                        fh.write(chunk)
                break
            except requests.RequestException:
                continue
    return time.monotonic() - t0


def process_cpu_s(pid: int) -> float | None:
    """CPU time (user + system) of process ``pid`` so far, s; None where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_s() -> float:
    """CPU time (user + system) of this process, all threads, s."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def check(names: list[str], dest: Path, digests: list[str]) -> tuple[int, int]:
    """(lost, corrupt): files missing, files present but not byte-identical to their source."""
    lost = corrupt = 0
    for i, name in enumerate(names):
        path = dest / name
        if not path.is_file():
            lost += 1
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digests[i % len(digests)]:
            corrupt += 1
    return lost, corrupt


def _avx2_ok(final: dict) -> bool:
    """False when the forced AVX2 pass lost or corrupted files."""
    a = final.get("avx2")
    return not isinstance(a, dict) or a.get("lost") == a.get("corrupt") == 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10_000, help="number of files (default 10,000)")
    p.add_argument("--size", type=int, default=100_000, help="approximate file size, bytes")
    p.add_argument("--latency-ms", type=float, default=50.0, help="server latency per request, ms")
    p.add_argument("--fault-rate", type=float, default=0.10, help="fraction of requests given a fault")
    p.add_argument("--connections", type=int, default=16, help="our concurrency (per host = in all)")
    p.add_argument("--seq-files", type=int, default=300, help="files timed through the sequential loop")
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of 429/503 faults, s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument(
        "--isa",
        choices=_cpu.CHOICES,
        default="both",
        help="instruction sets: native and forced AVX2 (default), or one of them",
    )
    args = p.parse_args(argv)
    if _cpu.reexec_if_needed(args.isa, __file__, argv):
        return 0
    print(_cpu.header(), flush=True)

    work = Path(tempfile.mkdtemp(prefix="latentsky-bench-", dir=args.workdir))
    latency = args.latency_ms / 1000
    try:
        sources = make_sources(work / "src", 50, args.size) if (work / "src").mkdir() is None else []
        digests = [hashlib.sha256(s.read_bytes()).hexdigest() for s in sources]
        mean_size = sum(s.stat().st_size for s in sources) / len(sources)
        queue = mp.get_context("fork").Queue()
        server = mp.get_context("fork").Process(
            target=_serve, args=(sources, latency, args.fault_rate, args.seed, args.retry_after, queue), daemon=True
        )
        server.start()
        base = queue.get(timeout=30)
        names = [f"f{i:05d}.fits" for i in range(args.files)]
        urls = [f"{base}/bench/{n}" for n in names]
        print(
            f"{args.files} files of {mean_size / 1e3:.0f} kB (real SDSS spectra cut to size) from {base}; "
            f"latency {args.latency_ms:g} ms, {args.fault_rate:.0%} faults of kinds {', '.join(FAULT_KINDS)}"
        )

        dest = work / "ours"
        items = [DownloadItem(n[:-5], u, dest / n, kind="fits") for n, u in zip(names, urls)]
        manager = DownloadManager(
            dest,
            max_connections=args.connections,
            max_connections_per_host=args.connections,
            max_retries=10,
            timeout=10,
            backoff=0.1,
            max_backoff=2.0,
            seed=args.seed,
        )
        load_before = os.getloadavg()[0]
        cpu0, server_cpu0 = own_cpu_s(), process_cpu_s(server.pid)
        results = manager.run(items)
        ours_s = results.elapsed
        client_ms = (own_cpu_s() - cpu0) * 1e3 / args.files
        server_cpu1 = process_cpu_s(server.pid)
        server_ms = (
            None
            if server_cpu0 is None or server_cpu1 is None
            else (server_cpu1 - server_cpu0) * 1e3 / max(1, results.requests)
        )
        load_after = os.getloadavg()[0]
        lost, corrupt = check(names, dest, digests)
        rate = args.files / ours_s
        bound = args.connections / latency
        print(
            f"ours:       {rate:8.1f} files/s  ({ours_s:.1f} s, {results.requests} requests, "
            f"{results.retries} retries, {len(results.errors)} failed, lost {lost}, corrupt {corrupt})"
        )
        # client and server share this machine's CPUs with whatever else runs: say how busy it was
        print(f"            (load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs)")
        print(
            f"            CPU time: client {client_ms:.2f} ms per file"
            + ("" if server_ms is None else f", server {server_ms:.2f} ms per request"),
            flush=True,
        )

        seq_n = min(args.seq_files, args.files)
        # distinct files (not the ones above) so the server's per-path fault draws are fresh
        seq_urls = [f"{base}/bench/s{i:05d}.fits" for i in range(seq_n)]
        seq_s = sequential(seq_urls, work / "sequential", timeout=10)
        seq_lost, seq_corrupt = check([u.rsplit("/", 1)[1] for u in seq_urls], work / "sequential", digests)
        seq_rate = seq_n / seq_s
        note = (
            ""
            if seq_n == args.files
            else (f", timed on {seq_n} files and extrapolated to {args.files}: {args.files / seq_rate:.0f} s")
        )
        print(
            f"sequential: {seq_rate:8.1f} files/s  ({seq_s:.1f} s{note}; lost {seq_lost}, corrupt {seq_corrupt} "
            f"of {seq_n})"
        )
        print(f"speed-up:   {rate / seq_rate:8.1f} x")
        seq_bound = 1 / latency
        print(
            f"            (the sequential loop reaches {seq_rate / seq_bound:.0%} of its own bound, "
            f"1 / latency = {seq_bound:.0f} files/s: the per-request overhead of this machine)"
        )
        req_rate = results.requests / ours_s
        print(
            f"bound:      {bound:8.1f} files/s = {args.connections} connections / {args.latency_ms:g} ms; "
            f"ours reach {rate / bound:.0%} of it ({results.requests / args.files:.3f} requests per file: "
            f"{req_rate:.1f} requests/s, {req_rate / bound:.0%} of the same bound in requests)"
        )
        server.terminate()
        result = {
            "files": args.files,
            "file_kB": round(mean_size / 1e3, 1),
            "latency_ms": args.latency_ms,
            "fault_rate": args.fault_rate,
            "connections": args.connections,
            "files_per_s": round(rate, 2),
            "sequential_files_per_s": round(seq_rate, 2),
            "sequential_timed_files": seq_n,
            "speedup": round(rate / seq_rate, 2),
            "bound_files_per_s": round(bound, 2),
            "fraction_of_bound": round(rate / bound, 3),
            "requests_per_s": round(req_rate, 2),
            "request_fraction_of_bound": round(req_rate / bound, 3),
            "lost": lost,
            "corrupt": corrupt,
            "failed": len(results.errors),
            "requests": results.requests,
            "retries": results.retries,
            "sequential_lost": seq_lost,
            "sequential_corrupt": seq_corrupt,
            "sequential_fraction_of_bound": round(seq_rate / seq_bound, 3),
            "loadavg_1min": [round(load_before, 2), round(load_after, 2)],
            "cpus": os.cpu_count(),
            "client_cpu_ms_per_file": round(client_ms, 3),
            "server_cpu_ms_per_request": None if server_ms is None else round(server_ms, 3),
        }
        final = _cpu.combine(result, args.isa, __file__, argv)
        if isinstance(final.get("avx2"), dict):
            a = final["avx2"]
            print(
                f"native ({final['isa']['isa']}): {rate:.1f} files/s, {rate / bound:.0%} of the bound; "
                f"AVX2 forced: {a['files_per_s']:.1f} files/s, {a['fraction_of_bound']:.0%}"
            )
        print(json.dumps(final))
        return 0 if lost == corrupt == 0 and _avx2_ok(final) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
