"""Benchmark 3: index a 5,000-package directory from scratch, and rescan it unchanged.

Targets: `scan_repository(dir, force=True)` under 3 s; `scan_repository(dir)` on the unchanged
directory under 0.3 s.

The corpus is 5,000 real `.wapt` files of a few KiB each, built with `build_package` from
sources holding `WAPT/control` (the realistic entries of `common.make_entries`), `setup.py` and
one incompressible payload file of 1 to 12 KiB, signed by one of three code-signing
certificates issued by the fixture CA. Building takes a while (two RSA signatures and an fsync
per package), so it runs on every core once and is kept under `bench/data/repo-*/`.

Each measurement is a fresh Python process timing one `scan_repository` call. The figures are
warm-cache: the files are read once before timing (dropping the page cache needs root).

    .venv/bin/python bench/scan_repo.py [--quick] [--repeat N] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import common
from common import Row, Samples

SCRIPT = Path(__file__).resolve()
FULL_COUNT = 5000
QUICK_COUNT = 500
GENERATOR_VERSION = 1
TARGET_FORCE_S = 3.0
TARGET_RESCAN_S = 0.3
WAPT_FORCE_S = 10.2
WAPT_RESCAN_S = 5.2

SETUP_PY = """\
# -*- coding: utf-8 -*-
from setuphelpers import *

uninstallkey = []


def install():
    # Installation silencieuse, préférences de l'établissement
    install_exe_if_needed("{payload}", silentflags="/S", key="{package}")


def uninstall():
    print("Désinstallation de {package}")
"""

_SIGNERS: list[Any] = []


def _init_builder() -> None:
    _SIGNERS.extend(common.signers())


def _build_chunk(count: int, indexes: list[int], repo: str) -> int:
    """Build the packages `indexes` of the corpus into `repo` (in a pool process)."""
    from wapt.control import format_control
    from wapt.package import build_package

    entries = common.make_entries(count)
    with tempfile.TemporaryDirectory(prefix="comptoir-bench-src-") as tmp:
        for index in indexes:
            entry = entries[index]
            rng = random.Random(index)
            source = Path(tmp) / str(index)
            (source / "WAPT").mkdir(parents=True)
            (source / "WAPT" / "control").write_text(format_control(entry), "utf-8")
            payload = f"{entry.package.split('-', 1)[1]}-{entry.version}-setup.exe"
            setup = SETUP_PY.format(payload=payload, package=entry.package)
            (source / "setup.py").write_text(setup, "utf-8")
            (source / payload).write_bytes(os.urandom(rng.randint(1024, 12 * 1024)))
            signer = rng.choices(_SIGNERS, weights=(6, 2, 2))[0]
            build_package(source, signer, Path(repo))
            shutil.rmtree(source)
    return len(indexes)


def prepare(quick: bool) -> Path:
    """The directory of packages, built once and reused while `stamp.json` matches."""
    count = QUICK_COUNT if quick else FULL_COUNT
    directory = common.DATA / f"repo-{count}"
    params = {"generator": GENERATOR_VERSION, "count": count}
    stamp = common.read_stamp(directory)
    if stamp and stamp.get("params") == params:
        return directory
    common.fresh_directory(directory)
    common.signers()  # make the extra signers once, before the pool shares them
    workers = os.cpu_count() or 1
    print(f"building {count} packages in {directory} ({workers} processes) ...", file=sys.stderr)
    start = time.perf_counter()
    chunks = [list(range(i, count, workers * 8)) for i in range(workers * 8)]
    with ProcessPoolExecutor(workers, initializer=_init_builder) as pool:
        built = sum(pool.map(partial(_build_chunk, count, repo=str(directory)), chunks))
    if built != count or len(list(directory.glob("*.wapt"))) != count:
        raise RuntimeError(f"built {built} packages, expected {count}")
    common.write_stamp(directory, {"params": params})
    print(f"  built in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return directory


# --- the child process -----------------------------------------------------------------------


def worker(mode: str, directory: Path, profile: bool) -> None:
    from wapt.repository import scan_repository

    force = mode == "force"
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(scan_repository, directory, force=force)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    start = time.perf_counter()
    result = scan_repository(directory, force=force)
    elapsed = time.perf_counter() - start
    report = {
        "scan_s": elapsed,
        "entries": len(result.entries),
        "read": len(result.read),
        "reused": result.reused,
        "skipped": [f"{name}: {error}" for name, error in result.skipped[:3]],
        "written": result.written,
    }
    print(json.dumps(report))


# --- the measurement -------------------------------------------------------------------------


def _read_all(directory: Path) -> int:
    total = 0
    for path in directory.glob("*.wapt"):
        total += len(path.read_bytes())
    return total


def run(quick: bool = False, repeat: int | None = None) -> dict[str, Any]:
    times = repeat or 5
    prepare_start = time.perf_counter()
    directory = prepare(quick)
    prepare_s = time.perf_counter() - prepare_start
    count = QUICK_COUNT if quick else FULL_COUNT
    corpus_bytes = _read_all(directory)  # into the page cache
    env = common.child_env()

    def scan(mode: str) -> dict[str, Any]:
        child = common.run_child(
            common.python_argv(SCRIPT, "--worker", mode, str(directory)), env=env
        )
        report: dict[str, Any] = child.json()
        report["process_s"] = child.wall
        expected_read = count if mode == "force" else 0
        if report["entries"] != count or report["read"] != expected_read or report["skipped"]:
            raise RuntimeError(f"{mode} scan did not do what was expected: {report}")
        if report["written"] != (mode == "force"):
            raise RuntimeError(f"{mode} scan: index written = {report['written']}")
        return report

    force, force_process = Samples(), Samples()
    rescan, rescan_process = Samples(), Samples()
    scan("force")  # warm-up (and an index to rescan)
    scan("rescan")
    for _ in range(times):
        report = scan("force")
        force.add(report["scan_s"])
        force_process.add(report["process_s"])
    for _ in range(times):
        report = scan("rescan")
        rescan.add(report["scan_s"])
        rescan_process.add(report["process_s"])
    index_bytes = (directory / "Packages").stat().st_size
    note = "" if not quick else f" (WAPT figure is for {FULL_COUNT:,})"
    rows = [
        Row(
            f"index {count:,}-package directory from scratch (`force=True`)",
            f"< {TARGET_FORCE_S} s",
            f"best {force.best:.3f} s, median {force.median:.3f} s",
            f"WAPT 1.8.2: {WAPT_FORCE_S} s{note}",
            common.versus_wapt(force.median, WAPT_FORCE_S, TARGET_FORCE_S, quick),
            force.median < TARGET_FORCE_S if not quick else None,
        ),
        Row(
            f"rescan unchanged {count:,}-package directory",
            f"< {TARGET_RESCAN_S} s",
            f"best {rescan.best:.3f} s, median {rescan.median:.3f} s",
            f"WAPT 1.8.2: {WAPT_RESCAN_S} s{note}",
            common.versus_wapt(rescan.median, WAPT_RESCAN_S, TARGET_RESCAN_S, quick),
            rescan.median < TARGET_RESCAN_S if not quick else None,
        ),
        Row(
            "same two, whole process",
            "(informative)",
            f"{force_process.median:.3f} s / {rescan_process.median:.3f} s (median)",
            "process includes interpreter start and imports",
            "",
            None,
        ),
    ]
    return {
        "name": "scan_repo",
        "rows": rows,
        "prepare_s": prepare_s,
        "details": {
            "packages": count,
            "corpus_bytes": corpus_bytes,
            "index_bytes": index_bytes,
            "rounds": times,
            "force_s": force.as_dict(),
            "rescan_s": rescan.as_dict(),
            "force_process_s": force_process.as_dict(),
            "rescan_process_s": rescan_process.as_dict(),
        },
    }


def print_result(result: dict[str, Any]) -> None:
    print(common.table(result["rows"]))
    d = result["details"]
    print()
    print(
        f"{d['packages']} packages, {d['corpus_bytes']:,} bytes; index {d['index_bytes']:,} "
        f"bytes; {d['rounds']} rounds"
    )
    for key in ("force_s", "rescan_s", "force_process_s", "rescan_process_s"):
        print(f"  {key[:-2]:<16} {Samples(d[key]['values']).describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 packages")
    parser.add_argument("--repeat", type=int, help="timed rounds of each scan (default 5)")
    parser.add_argument("--profile", action="store_true", help="cProfile one scan of each kind")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), args.profile)
        return
    if args.profile:
        directory = prepare(args.quick)
        for mode in ("force", "rescan"):
            child = common.run_child(
                common.python_argv(SCRIPT, "--profile", "--worker", mode, str(directory)),
                env=common.child_env(),
            )
            print(f"## {mode}\n{child.stderr}")
        return
    result = run(args.quick, args.repeat)
    print_result(result)
    common.write_results("scan_repo", {**result, "rows": [r.__dict__ for r in result["rows"]]})


if __name__ == "__main__":
    main()
