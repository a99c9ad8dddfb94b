"""The CPU a bench runs on, and a second pass of the same bench with AVX2 forced.

Most laptops, many cloud nodes and every Apple-silicon machine lack AVX-512, so
each bench reports its figures twice in one run: with this machine's native
instruction set, and in a child process whose libraries are told to use AVX2
at most (:func:`avx2_env`):

* numba (our kernels, Datashader): ``NUMBA_CPU_NAME=haswell`` and
  ``NUMBA_CPU_FEATURES`` = this CPU's features less every AVX-512 one;
* OpenBLAS (NumPy, SciPy): ``OPENBLAS_CORETYPE=Haswell``;
* NumPy's own SIMD dispatch: ``NPY_DISABLE_CPU_FEATURES`` (no X86_V4/AVX512_*);
* glibc (memcpy, strlen...): ``GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,...``;
* OpenSSL (hashlib): ``OPENSSL_ia32cap`` with the AVX-512 bits cleared;
* Arrow (Parquet): ``ARROW_USER_SIMD_LEVEL=AVX2``; oneDNN (TensorFlow):
  ``ONEDNN_MAX_CPU_ISA=AVX2``.

:func:`describe` says what the current process actually runs with, from the
libraries themselves where they can say (numba's target, OpenBLAS's core type,
NumPy's dispatch level, Arrow's SIMD level).  A browser (Chromium) picks its
own code paths: it is not forced.

Usage in a bench (``bench/`` is on ``sys.path`` when a bench runs)::

    import _cpu
    parser.add_argument("--isa", choices=_cpu.CHOICES, default="both")
    ...
    if _cpu.reexec_if_needed(args.isa, __file__, argv):   # --isa avx2 outside the forced env
        return 0
    result = run_the_bench()                                # figures of this process
    final = _cpu.combine(result, args.isa, __file__, argv)  # + the forced-AVX2 child's figures
    print(json.dumps(final))
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys

CHOICES = ("both", "native", "avx2")
"""``--isa`` values: both passes (default), this machine's instruction set only, forced AVX2 only."""

MARKER = "LATENTSKY_BENCH_ISA"
"""Environment variable set (to ``avx2``) in the forced pass's process."""

_AVX512_NAMES = ("X86_V4", "AVX512")
# OpenSSL's capability vector for CPUID leaf 7 (EBX | ECX << 32): AVX512F, DQ, IFMA, PF, ER, CD, BW, VL
# (EBX bits 16, 17, 21, 26, 27, 28, 30, 31) and VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ (ECX 1, 6, 11, 12, 14)
_OPENSSL_AVX512_MASK = 0x00005842_DC230000


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"; /proc/cpuinfo or platform as fall-backs)."""
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, env=dict(os.environ, LC_ALL="C")
        ).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def host_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where unknown)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def host_isa() -> str:
    """The widest x86 vector instruction set of this CPU: ``AVX-512``, ``AVX2``, or the machine name."""
    flags = host_flags()
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    return platform.machine() or "unknown"


def avx2_env() -> dict[str, str]:
    """Environment variables that keep every library of a new process to AVX2 (see the module docstring)."""
    env = {
        MARKER: "avx2",
        "NUMBA_CPU_NAME": "haswell",
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL",
        "OPENSSL_ia32cap": f"~0x0:~0x{_OPENSSL_AVX512_MASK:x}",
        "ARROW_USER_SIMD_LEVEL": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    }
    try:  # numba: this CPU's own features less AVX-512 (the name alone keeps the host's features)
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten().split(",")
        env["NUMBA_CPU_FEATURES"] = ",".join(
            "-" + f[1:] if f.startswith("+") and re.match(r"\+(avx512|avx10|amx|evex512)", f) else f
            for f in features
            if f
        )
    except Exception:  # no llvmlite, or a CPU it cannot describe: haswell's own features
        env["NUMBA_CPU_FEATURES"] = ""
    return env


def forced() -> bool:
    """Whether this process runs the forced-AVX2 pass."""
    return os.environ.get(MARKER) == "avx2"


def describe() -> dict:
    """What this process runs with: ``{"isa": "AVX-512" | "AVX2" | ..., "parts": {library: level}}``.

    Each library the bench has imported is asked where it can say (numba's
    target, NumPy's dispatch level, OpenBLAS's core type, Arrow's SIMD level);
    glibc, OpenSSL and oneDNN (TensorFlow) are named with the cap the
    environment sets, if any.
    """
    parts: dict[str, str] = {}
    wide = False
    capped = forced()
    if "numba" in sys.modules:
        from numba.core import config

        if config.CPU_NAME:
            name, features = config.CPU_NAME, config.CPU_FEATURES
        else:
            import llvmlite.binding as llvm

            name, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
        has512 = "+avx512f" in features if features is not None else "avx512f" in host_flags()
        parts["numba"] = f"{name} ({'AVX-512' if has512 else 'no AVX-512'})"
        wide |= has512
    if "numpy" in sys.modules:
        np = sys.modules["numpy"]
        try:
            from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        except ImportError:  # NumPy 1.x
            from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        found = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
        parts["numpy"] = found[-1] if found else "baseline"
        wide |= any(f.startswith(_AVX512_NAMES) for f in found)
        try:
            from threadpoolctl import threadpool_info

            np.ones((2, 2)) @ np.ones((2, 2))  # OpenBLAS loaded and initialised
            for info in threadpool_info():
                if info.get("internal_api") == "openblas":
                    arch = str(info.get("architecture"))
                    parts["openblas"] = arch
                    wide |= arch.lower() in ("skylakex", "cooperlake", "sapphirerapids")
        except ImportError:
            pass
    if "pyarrow" in sys.modules:
        level = sys.modules["pyarrow"].runtime_info().simd_level
        parts["arrow"] = level
        wide |= "512" in level
    libs = [("glibc", "GLIBC_TUNABLES"), ("openssl", "OPENSSL_ia32cap")]
    if "tensorflow" in sys.modules:
        libs.append(("onednn", "ONEDNN_MAX_CPU_ISA"))
    for lib, var in libs:
        parts[lib] = "capped to AVX2" if capped and os.environ.get(var) else "native"
    if not capped:
        wide |= host_isa() == "AVX-512"  # glibc and OpenSSL take AVX-512 paths where the CPU has them
    return {"isa": "AVX-512" if wide else ("AVX2" if "avx2" in host_flags() else host_isa()), "parts": parts}


def header() -> str:
    """One line for the top of a bench's output: the CPU model and the instruction set of this pass."""
    what = "AVX2 forced" if forced() else f"native ({host_isa()})"
    return f"CPU: {cpu_model()} ({os.cpu_count()} CPUs); instruction set of this pass: {what}"


def _argv_with_isa(argv: list[str] | None, isa: str) -> list[str]:
    args = list(sys.argv[1:] if argv is None else argv)
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--isa":
            skip = True
            continue
        if a.startswith("--isa="):
            continue
        out.append(a)
    return out + ["--isa", isa]


def run_avx2_pass(script: str, argv: list[str] | None, extra: list[str] = ()) -> tuple[dict | None, str]:
    """Run ``script`` again in a child process with AVX2 forced; (its JSON line, its other output).

    ``extra`` arguments are added to the child's (e.g. data the first pass made).
    The child's output is echoed as it comes (indented); None for the JSON
    when the child failed or this CPU cannot run AVX2 code.
    """
    if "avx2" not in host_flags():
        return None, f"not run: this CPU ({host_isa()}) has no AVX2"
    env = dict(os.environ, **avx2_env())
    cmd = [sys.executable, script, *_argv_with_isa(argv, "avx2"), *extra]
    print(
        "--- forced AVX2 pass: "
        + " ".join(f"{k}={v}" for k, v in sorted(env.items()) if k in avx2_env() and k != "NUMBA_CPU_FEATURES")
        + " NUMBA_CPU_FEATURES=<this CPU's, less AVX-512>",
        flush=True,
    )
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if not line.startswith("{"):
            print("    " + line.rstrip("\n"), flush=True)
    proc.wait()
    result = None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                pass
            break
    if proc.returncode != 0 and result is None:
        return None, f"failed (exit status {proc.returncode})"
    return result, "\n".join(lines)


def reexec_if_needed(isa: str, script: str, argv: list[str] | None) -> bool:
    """For ``--isa avx2`` in a process without the forced environment: run the pass in a child.

    Returns True when the child did the work (the caller then returns); its
    output, JSON line included, has been printed.
    """
    if isa != "avx2" or forced():
        return False
    result, note = run_avx2_pass(script, argv)
    if result is None:
        raise SystemExit(f"forced AVX2 pass {note}")
    print(json.dumps(result))
    return True


def combine(result: dict, isa: str, script: str, argv: list[str] | None, extra: list[str] = ()) -> dict:
    """This pass's figures with the CPU, its instruction set and (``--isa both``) the forced-AVX2 pass's.

    The native figures stay at the top level; the AVX2 ones go under ``"avx2"``.
    On a CPU without AVX-512 the native pass is already AVX2: it is not run twice.
    """
    out = dict(result)
    out["cpu_model"] = cpu_model()
    out["isa"] = describe()
    if isa != "both" or forced():
        return out
    if host_isa() != "AVX-512":
        out["avx2"] = "same as native (this CPU has no AVX-512)" if host_isa() == "AVX2" else None
        return out
    child, note = run_avx2_pass(script, argv, extra)
    out["avx2"] = child if child is not None else f"forced AVX2 pass {note}"
    return out
