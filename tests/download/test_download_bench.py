"""bench/download.py stays runnable: a small run ends with its JSON line and nothing lost or corrupt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "download.py"


def test_bench_small_run(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--files",
            "120",
            "--seq-files",
            "10",
            "--connections",
            "8",
            "--retry-after",
            "0.2",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    for key in ("files_per_s", "sequential_files_per_s", "speedup", "fraction_of_bound", "lost", "corrupt"):
        assert key in result
    assert result["lost"] == result["corrupt"] == 0 and result["files"] == 120
    assert result["files_per_s"] > result["sequential_files_per_s"]
    assert "extrapolated" in out.stdout
    assert list(tmp_path.iterdir()) == []  # the scratch folder is cleaned up
    # the CPU and the instruction set of each pass; the forced AVX2 pass in a child process
    assert result["cpu_model"] and result["cpu_model"] in out.stdout and result["client_cpu_ms_per_file"] > 0
    avx2 = result["avx2"]
    if "avx512f" in Path("/proc/cpuinfo").read_text():
        assert result["isa"]["isa"] == "AVX-512"
        assert avx2["isa"]["isa"] == "AVX2" and avx2["lost"] == avx2["corrupt"] == 0 and avx2["files"] == 120
        assert avx2["isa"]["parts"]["openssl"] == "capped to AVX2" and "AVX2 forced" in out.stdout


def test_soak_small_run(tmp_path):
    soak = BENCH.with_name("soak.py")
    out = subprocess.run(
        [sys.executable, str(soak), "--files", "40", "--kills", "2", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["kills"] == 2 and result["files"] == 40
    assert result["lost"] == result["corrupt"] == result["redownloaded_verified"] == result["leftover_temp"] == 0
    assert list(tmp_path.iterdir()) == []
