"""Benchmark 1: verify a 500 MiB package, against `sha256sum` on the same file.

Target: `verify_package` at least 90 % of `sha256sum`'s throughput on the `.wapt` file,
measured in the same run, with a peak memory under 100 MB.

The package is realistic: ~500 MiB of incompressible payload (installers are already
compressed) in four files, one of 450 MiB, built and signed with `build_package`. It is built
once and kept under `bench/data/verify-*/`.

Every measurement runs from the page cache: the file is read twice before timing. Each round
times, in this order, `sha256sum FILE`, `openssl dgst -sha256 FILE`, `cp FILE` to a tmpfs, and
`verify_package` in a fresh Python process (which also gives its peak RSS through `wait4`). A
"baseline" process that imports the same modules and loads the trust store, but verifies
nothing, gives the interpreter's own footprint.

    .venv/bin/python bench/verify_large.py [--quick] [--repeat N] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import common
from common import MiB, Row, Samples

SCRIPT = Path(__file__).resolve()
FULL_SIZES = (450 * MiB, 30 * MiB, 15 * MiB, 5 * MiB)
QUICK_SIZES = tuple(size // 10 for size in FULL_SIZES)
PAYLOAD_NAMES = (
    "installers/suite-sciences-2026-x64.msi",
    "installers/regressi-setup.exe",
    "installers/latispro-setup.exe",
    "config/profils-etablissement.zip",
)
GENERATOR_VERSION = 1
TARGET_RATIO = 0.90
TARGET_RSS_BYTES = 100 * 1000 * 1000  # 100 MB (decimal), the stricter reading

SETUP_PY = """\
# -*- coding: utf-8 -*-
from setuphelpers import *

uninstallkey = []


def install():
    print("Installation de la suite sciences (hors ligne)")
    install_msi_if_needed("installers/suite-sciences-2026-x64.msi")
    install_exe_if_needed("installers/regressi-setup.exe", silentflags="/S")
    install_exe_if_needed("installers/latispro-setup.exe", silentflags="/S")
"""

CONTROL = {
    "package": "ac-suite-sciences",
    "version": "2026.11.0-1",
    "architecture": "x64",
    "section": "base",
    "priority": "optional",
    "name": "Suite sciences (installateurs hors ligne)",
    "categories": "Sciences,Établissement",
    "maintainer": "Équipe TICE <tice@ac-exemple.fr>",
    "description": "Science software bundle for secondary schools, offline installers",
    "description_fr": "Logiciels de sciences physiques et SVT pour les lycées, hors ligne",
    "maturity": "PROD",
    "target_os": "windows",
    "installed_size": str(1200 * MiB),
    "editor": "Académie d'exemple",
}


def _write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MiB))
            f.write(chunk)
            left -= len(chunk)


def prepare(quick: bool) -> Path:
    """The package, built once per size and reused while `stamp.json` matches."""
    from wapt.control import PackageEntry, format_control
    from wapt.package import build_package

    sizes = QUICK_SIZES if quick else FULL_SIZES
    directory = common.DATA / ("verify-quick" if quick else "verify-500m")
    params = {"generator": GENERATOR_VERSION, "sizes": list(sizes)}
    stamp = common.read_stamp(directory)
    if stamp and stamp.get("params") == params and (directory / stamp["file"]).is_file():
        return directory / str(stamp["file"])
    common.fresh_directory(directory)
    source = directory / "src"
    (source / "WAPT").mkdir(parents=True)
    (source / "WAPT" / "control").write_text(format_control(PackageEntry(CONTROL)), "utf-8")
    (source / "setup.py").write_text(SETUP_PY, "utf-8")
    for name, size in zip(PAYLOAD_NAMES, sizes, strict=True):
        _write_random(source / name, size)
    print(f"building a {sum(sizes) / MiB:.0f} MiB package in {directory} ...", file=sys.stderr)
    start = time.perf_counter()
    package = build_package(source, common.fixture_signer("codesign"), directory)
    print(f"  built in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    import shutil

    shutil.rmtree(source)
    common.write_stamp(directory, {"params": params, "file": package.name})
    return package


# --- the child processes ---------------------------------------------------------------------


def worker(mode: str, path: Path, profile: bool) -> None:
    """In a fresh process: verify `path` (or, for the baseline, only get ready to)."""
    from wapt.package import verify_package

    start = time.perf_counter()
    trust = common.trust_store()
    ready = time.perf_counter()
    result: dict[str, Any] = {"trust_s": ready - start}
    if mode == "verify":
        if profile:
            _profile(lambda: verify_package(path, trust))
        verified = verify_package(path, trust)
        result["verify_s"] = time.perf_counter() - ready
        result["files"] = len(verified.manifest)
        result["package"] = verified.entry.package
    print(json.dumps(result))


def _profile(fn: Any) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(15)


# --- the measurement -------------------------------------------------------------------------


def _read_through(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MiB):
            pass


def run(quick: bool = False, repeat: int | None = None) -> dict[str, Any]:
    times = repeat or (3 if quick else 5)
    prepare_start = time.perf_counter()
    package = prepare(quick)
    prepare_s = time.perf_counter() - prepare_start
    size = package.stat().st_size
    env = common.child_env()
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else package.parent
    copy_target = scratch / f"comptoir-bench-{os.getpid()}.copy"

    for _ in range(2):  # into the page cache, for every tool alike
        _read_through(package)

    sha256sum, openssl, cp = Samples(), Samples(), Samples()
    verify_call, verify_process, verify_rss = Samples(), Samples(), Samples()
    baseline_rss = Samples()
    # one untimed round first: warms the tools, the interpreter's .pyc and the cache
    common.run_child(["sha256sum", str(package)])
    common.run_child(common.python_argv(SCRIPT, "--worker", "verify", str(package)), env=env)
    for _ in range(times):
        sha256sum.add(common.run_child(["sha256sum", str(package)]).wall)
        openssl.add(common.run_child(["openssl", "dgst", "-sha256", str(package)]).wall)
        cp.add(common.run_child(["cp", str(package), str(copy_target)]).wall)
        copy_target.unlink()
        child = common.run_child(
            common.python_argv(SCRIPT, "--worker", "verify", str(package)), env=env
        )
        report = child.json()
        verify_call.add(report["verify_s"])
        verify_process.add(child.wall)
        verify_rss.add(child.maxrss_kib * 1024)
        base = common.run_child(
            common.python_argv(SCRIPT, "--worker", "baseline", str(package)), env=env
        )
        baseline_rss.add(base.maxrss_kib * 1024)

    def throughput(samples: Samples) -> tuple[float, float]:
        return size / samples.best, size / samples.median

    sha_best, sha_median = throughput(sha256sum)
    ver_best, ver_median = throughput(verify_call)
    proc_best, proc_median = throughput(verify_process)
    ssl_best, _ = throughput(openssl)
    cp_best, _ = throughput(cp)
    ratio_best = ver_best / sha_best
    ratio_median = ver_median / sha_median
    rss_peak = verify_rss.worst
    rss_base = baseline_rss.median
    label = f"verify {size / MiB:,.0f} MiB package"
    rows = [
        Row(
            label,
            f"≥ {TARGET_RATIO:.0%} of sha256sum",
            f"{common.fmt_bytes_per_s(ver_best)} (median {common.fmt_bytes_per_s(ver_median)})",
            f"sha256sum {common.fmt_bytes_per_s(sha_best)}; cp {common.fmt_bytes_per_s(cp_best)}; "
            f"openssl {common.fmt_bytes_per_s(ssl_best)}",
            f"{ratio_best:.2f}× sha256sum (median {ratio_median:.2f}×; WAPT 0.54×)",
            ratio_median >= TARGET_RATIO,
        ),
        Row(
            f"{label}, whole process",
            "(informative)",
            f"{common.fmt_bytes_per_s(proc_best)} (median {common.fmt_bytes_per_s(proc_median)})",
            "includes interpreter start, imports, trust store",
            f"{proc_best / sha_best:.2f}× sha256sum",
            None,
        ),
        Row(
            f"{label}, peak RSS",
            "< 100 MB",
            f"{rss_peak / 1e6:.1f} MB ({rss_peak / MiB:.1f} MiB)",
            f"bare interpreter + imports {rss_base / 1e6:.1f} MB",
            _rss_growth(rss_peak - rss_base),
            rss_peak < TARGET_RSS_BYTES,
        ),
    ]
    return {
        "name": "verify_large",
        "rows": rows,
        "prepare_s": prepare_s,
        "details": {
            "file": str(package),
            "bytes": size,
            "rounds": times,
            "sha256sum_s": sha256sum.as_dict(),
            "openssl_dgst_s": openssl.as_dict(),
            "cp_to_tmpfs_s": cp.as_dict(),
            "verify_call_s": verify_call.as_dict(),
            "verify_process_s": verify_process.as_dict(),
            "verify_maxrss_bytes": verify_rss.as_dict(),
            "baseline_maxrss_bytes": baseline_rss.as_dict(),
            "ratio_best": ratio_best,
            "ratio_median": ratio_median,
        },
    }


def _rss_growth(delta: float) -> str:
    if delta < 0.5e6:
        return "verify adds nothing over the import peak"
    return f"verify adds {delta / 1e6:.1f} MB"


def print_result(result: dict[str, Any]) -> None:
    print(common.table(result["rows"]))
    d = result["details"]
    print()
    print(f"file: {d['file']} ({d['bytes']:,} bytes), {d['rounds']} rounds")
    for key in ("sha256sum_s", "openssl_dgst_s", "cp_to_tmpfs_s", "verify_call_s"):
        s = Samples(d[key]["values"])
        print(f"  {key[:-2]:<16} {s.describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 50 MiB package, 3 rounds")
    parser.add_argument("--repeat", type=int, help="timed rounds (default 5, quick 3)")
    parser.add_argument("--profile", action="store_true", help="cProfile one verification")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), args.profile)
        return
    if args.profile:
        package = prepare(args.quick)
        child = common.run_child(
            common.python_argv(SCRIPT, "--profile", "--worker", "verify", str(package)),
            env=common.child_env(),
        )
        print(child.stderr)
        return
    result = run(args.quick, args.repeat)
    print_result(result)
    common.write_results("verify_large", {**result, "rows": [r.__dict__ for r in result["rows"]]})


if __name__ == "__main__":
    main()
