"""Benchmark 4: write a 2 GB USB bundle, update it, verify it; against `cp` and `sha256sum`.

Targets (issue 6):

- first write of 2 GB of packages: at least 80 % of `cp`'s throughput to the same file system;
- re-run with one changed 100 MB package: at most 1.5 × the time to copy that package, plus 1 s;
- `bundle verify`: at least 80 % of `sha256sum`'s throughput.

The corpus is 20 real signed `.wapt` files of 100 MiB each (incompressible payload, like
installers), built with `build_package` on every core, plus a changed copy of one of them (same
file name, other bytes). Sources and bundle are on the same file system: the work disk under
`bench/data/` (or `COMPTOIR_BENCH_DATA`), or a tmpfs with `--tmpfs`. Everything runs from the
page cache (sources read once before timing). The 2 GB corpus is deleted at the end unless
`--keep` is given.

The first write is measured the way a technician makes one: from a repository that was
indexed (`scan_repository`, not timed: it records each package's sha256, so the writer copies
with `copy_file_range` and hashes nothing) onto an empty destination. The reference is `cp -r`
of the same 20 files into an empty directory of the same file system, in the same round: GNU
cp 9.1 also uses `copy_file_range`, and does not flush. The target is decided against `cp -r`
as written; `cp -r` followed by `sync` (what a technician must do before pulling a stick, and
what the writer does per file before its switch-over) is the second reference. The cold path,
the same write with no recorded hash (every byte hashed while copied, as for bare `.wapt`
files), is measured too, as is the fast path with an fsync per file instead of the one `syncfs`
the default ("auto") chooses for kernel copies (`usb_bundler.writer.SYNC_MODE`).

Each measurement is one library call timed in a fresh Python process.

    .venv/bin/python bench/bundle.py [--quick] [--repeat N] [--tmpfs] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import common
from common import MiB, Row, Samples

from wapt.repository import scan_repository

SCRIPT = Path(__file__).resolve()
FULL = (20, 100 * MiB)
QUICK = (10, 10 * MiB)
GENERATOR_VERSION = 1
TARGET_WRITE_RATIO = 0.80
TARGET_VERIFY_RATIO = 0.80
PASSPHRASE = b"bench"
CHANGED = 7  # index of the package that changes between the two writes


def _data_root(tmpfs: bool) -> Path:
    if tmpfs:
        return Path(tempfile.mkdtemp(prefix="comptoir-bench-bundle-", dir="/dev/shm"))
    return common.DATA


def _build_one(directory: str, size: int, index: int, variant: int) -> str:
    """Build package `index` (or its changed `variant`) into `directory` (in a pool)."""
    from wapt.control import PackageEntry, format_control
    from wapt.package import build_package

    with tempfile.TemporaryDirectory(prefix="comptoir-bench-src-") as tmp:
        source = Path(tmp)
        (source / "WAPT").mkdir()
        entry = PackageEntry(
            {
                "package": f"ac-logiciel-{index:02d}",
                "version": "1.0-1",
                "architecture": "all",
                "section": "base",
                "priority": "optional",
                "description": f"Logiciel {index} pour les salles hors ligne",
            }
        )
        (source / "WAPT" / "control").write_text(format_control(entry), "utf-8")
        (source / "setup.py").write_text("def install():\n    pass\n", "utf-8")
        rng = random.Random(f"{index}-{variant}")
        with open(source / "setup.exe", "wb") as f:
            left = size
            while left:
                n = min(left, 8 * MiB)
                f.write(rng.randbytes(n))
                left -= n
        out = Path(directory) / (f"v{variant}" if variant else "")
        out.mkdir(parents=True, exist_ok=True)
        return str(build_package(source, common.fixture_signer("codesign"), out, overwrite=True))


def prepare(root: Path, quick: bool) -> tuple[Path, Path]:
    """The corpus directory and the changed package (same name as package CHANGED)."""
    count, size = QUICK if quick else FULL
    directory = root / f"bundle-{count}x{size // MiB}m"
    params = {"generator": GENERATOR_VERSION, "count": count, "size": size}
    stamp = common.read_stamp(directory) if directory.exists() else None
    changed_dir = directory / "v1"
    if stamp and stamp.get("params") == params:
        return directory, next(changed_dir.glob("*.wapt"))
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    workers = os.cpu_count() or 1
    print(f"building {count} x {size // MiB} MiB packages in {directory} ...", file=sys.stderr)
    start = time.perf_counter()
    jobs = [(i, 0) for i in range(count)] + [(CHANGED, 1)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(partial(_build_one, str(directory), size), *zip(*jobs, strict=True)))
    print(f"  built in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    common.write_stamp(directory, {"params": params})
    return directory, next(changed_dir.glob("*.wapt"))


# --- the child process -----------------------------------------------------------------------


def worker(args: list[str]) -> None:
    mode = args[0]
    if mode == "create":
        from usb_bundler import create_or_update_bundle, load_bundle_keys, packages_from_repository

        sync_mode, hashes, dest, keys_dir, cache, repo, *names = args[1:]
        import dataclasses

        import usb_bundler.writer

        usb_bundler.writer.SYNC_MODE = sync_mode
        keys = load_bundle_keys(Path(keys_dir), PASSPHRASE)
        start = time.perf_counter()
        selection = packages_from_repository(repo, packages=names)
        sources = selection.packages
        if hashes == "cold":  # as if the index had no scan record: hash every byte
            sources = [dataclasses.replace(s, recorded=None) for s in sources]
        elif not all(s.recorded for s in sources):
            raise RuntimeError("the repository's index has no sha256 record")
        result = create_or_update_bundle(
            Path(dest), sources, keys, hash_cache=Path(cache), name="bench"
        )
        elapsed = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "seconds": elapsed,
                    "copied": len(result.copied),
                    "bytes_copied": result.bytes_copied,
                    "bytes_hashed": result.bytes_hashed,
                    "version": result.version,
                }
            )
        )
    elif mode == "verify":
        from wapt.bundle import verify_bundle

        dest, root = args[1:]
        start = time.perf_counter()
        verified = verify_bundle(Path(dest), Path(root))
        elapsed = time.perf_counter() - start
        total = sum(t.length for t in verified.targets.values())
        print(json.dumps({"seconds": elapsed, "bytes": total, "files": len(verified.targets)}))


def _child(*args: str) -> dict[str, Any]:
    child = common.run_child(common.python_argv(SCRIPT, "--worker", *args), env=common.child_env())
    result: dict[str, Any] = child.json()
    return result


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _read_all(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(8 * MiB):
                pass


# --- the measurement -------------------------------------------------------------------------


def run(
    quick: bool = False, repeat: int | None = None, tmpfs: bool = False, keep: bool = False
) -> dict[str, Any]:
    rounds = repeat or 3
    root = _data_root(tmpfs)
    prepare_start = time.perf_counter()
    corpus, changed = prepare(root, quick)
    packages = sorted(corpus.glob("*.wapt"))
    keys_dir = root / "bundle-keys"
    if not (keys_dir / "root.json").exists():
        from usb_bundler import new_bundle_keys

        new_bundle_keys(keys_dir, PASSPHRASE)
    prepare_s = time.perf_counter() - prepare_start
    total_bytes = sum(p.stat().st_size for p in packages)
    names = [f"ac-logiciel-{i:02d}" for i in range(len(packages))]
    changed_source = corpus / changed.name
    original = corpus / "original.keep"
    shutil.copy2(changed_source, original)
    file_system = subprocess.run(
        ["stat", "-f", "-c", "%T", str(root)], capture_output=True, text=True, check=False
    ).stdout.strip()

    cp_s, cp_sync_s, write_s, rewrite_s = Samples(), Samples(), Samples(), Samples()
    fsync_write_s, cold_write_s = Samples(), Samples()
    one_cp_s, one_cp_sync_s, verify_s, sha_s = Samples(), Samples(), Samples(), Samples()
    details: list[dict[str, Any]] = []
    try:
        for _ in range(rounds):
            shutil.copy2(original, changed_source)
            scan_repository(corpus)  # the repository's index, as `comptoir repo scan` keeps it
            _read_all([*packages, changed])
            dest = root / "bundle-dest"
            for directory in (dest, root / "cp-dest", root / "bundle-cache"):
                if directory.exists():
                    shutil.rmtree(directory)
            subprocess.run(["sync"], check=True)

            (root / "cp-dest").mkdir()
            t_cp = _timed(["cp", "-r", *map(str, packages), str(root / "cp-dest")])
            t_sync = _timed(["sync"])
            cp_s.add(t_cp)
            cp_sync_s.add(t_cp + t_sync)
            shutil.rmtree(root / "cp-dest")
            subprocess.run(["sync"], check=True)

            cache = root / "bundle-cache" / "hashes.json"

            # what a write takes after its sync mode and hash source (see `worker`)
            where = [str(dest), str(keys_dir), str(cache), str(corpus), *names]

            # the cold path and the per-file fsync, for comparison (each its own fresh bundle)
            for mode, hashes, samples in (
                ("auto", "cold", cold_write_s),
                ("fsync", "recorded", fsync_write_s),
            ):
                other = _child("create", mode, hashes, *where)
                samples.add(other["seconds"])
                for directory in (dest, root / "bundle-cache"):
                    shutil.rmtree(directory, ignore_errors=True)
                subprocess.run(["sync"], check=True)
            first = _child("create", "auto", "recorded", *where)
            write_s.add(first["seconds"])
            subprocess.run(["sync"], check=True)

            # one package changes (same name, other bytes); time copying it alone
            shutil.copy2(changed, changed_source)
            _read_all([changed_source])
            (root / "cp-dest").mkdir()
            t_one = _timed(["cp", str(changed_source), str(root / "cp-dest")])
            t_one_sync = _timed(["sync"])
            one_cp_s.add(t_one)
            one_cp_sync_s.add(t_one + t_one_sync)
            shutil.rmtree(root / "cp-dest")
            subprocess.run(["sync"], check=True)
            scan_repository(corpus)  # the repository admin's step: reads only the changed file
            second = _child("create", "auto", "recorded", *where)
            rewrite_s.add(second["seconds"])
            if second["copied"] != 1:
                raise RuntimeError(f"the re-run copied {second['copied']} packages, not 1")

            files = [
                str(p) for p in dest.rglob("*") if p.is_file() and "comptoir-bundle" not in p.parts
            ]
            _read_all([Path(f) for f in files])
            sha_s.add(_timed(["sha256sum", *files]))
            verified = _child("verify", str(dest), str(keys_dir / "root.json"))
            verify_s.add(verified["seconds"])
            details.append({"first": first, "second": second, "verify": verified})
        bundle_bytes = details[-1]["verify"]["bytes"]
    finally:
        shutil.copy2(original, changed_source)
        original.unlink()
        for directory in (root / "bundle-dest", root / "cp-dest", root / "bundle-cache"):
            shutil.rmtree(directory, ignore_errors=True)
        if not keep:
            shutil.rmtree(corpus, ignore_errors=True)
            shutil.rmtree(keys_dir, ignore_errors=True)
        if tmpfs:
            shutil.rmtree(root, ignore_errors=True)

    write_rate = total_bytes / write_s.median
    fsync_rate = total_bytes / fsync_write_s.median
    cold_rate = total_bytes / cold_write_s.median
    cp_rate, cp_sync_rate = total_bytes / cp_s.median, total_bytes / cp_sync_s.median
    budget = 1.5 * one_cp_s.median + 1.0
    budget_sync = 1.5 * one_cp_sync_s.median + 1.0
    verify_rate, sha_rate = bundle_bytes / verify_s.median, bundle_bytes / sha_s.median
    count, size = QUICK if quick else FULL
    label = f"{count} x {size // MiB} MiB ({total_bytes / MiB:,.0f} MiB)"
    rows = [
        Row(
            f"first write of a bundle from an indexed repository, {label}",
            f"≥ {TARGET_WRITE_RATIO:.0%} of cp -r",
            f"{common.fmt_bytes_per_s(write_rate)} (median {write_s.median:.2f} s)",
            f"cp -r {common.fmt_bytes_per_s(cp_rate)} (copy_file_range, data not yet on disk)",
            f"{write_rate / cp_rate:.2f}× cp -r",
            write_rate / cp_rate >= TARGET_WRITE_RATIO,
        ),
        Row(
            "same, against cp -r + sync",
            "(second reference)",
            f"{common.fmt_bytes_per_s(write_rate)}",
            f"cp -r + sync {common.fmt_bytes_per_s(cp_sync_rate)}",
            f"{write_rate / cp_sync_rate:.2f}× cp -r + sync",
            None,
        ),
        Row(
            "first write, cold path (no recorded sha256: every byte hashed)",
            "(informative)",
            f"{common.fmt_bytes_per_s(cold_rate)} (median {cold_write_s.median:.2f} s)",
            f"cp -r {common.fmt_bytes_per_s(cp_rate)}; "
            f"+ sync {common.fmt_bytes_per_s(cp_sync_rate)}",
            f"{cold_rate / cp_rate:.2f}× cp -r; {cold_rate / cp_sync_rate:.2f}× cp -r + sync",
            None,
        ),
        Row(
            "first write, an fsync per file instead of one syncfs",
            "(informative)",
            f"{common.fmt_bytes_per_s(fsync_rate)} (median {fsync_write_s.median:.2f} s)",
            f"cp -r {common.fmt_bytes_per_s(cp_rate)}",
            f"{fsync_rate / cp_rate:.2f}× cp -r",
            None,
        ),
        Row(
            f"re-run with one changed {size // MiB} MiB package",
            "≤ 1.5 × copy of it + 1 s",
            f"{rewrite_s.median:.3f} s (best {rewrite_s.best:.3f} s)",
            f"cp of it {one_cp_s.median:.3f} s → budget {budget:.2f} s "
            f"(with sync {budget_sync:.2f} s)",
            f"{rewrite_s.median / budget:.0%} of budget",
            rewrite_s.median <= budget,
        ),
        Row(
            f"bundle verify, {bundle_bytes / MiB:,.0f} MiB",
            f"≥ {TARGET_VERIFY_RATIO:.0%} of sha256sum",
            f"{common.fmt_bytes_per_s(verify_rate)} (median {verify_s.median:.2f} s)",
            f"sha256sum {common.fmt_bytes_per_s(sha_rate)}",
            f"{verify_rate / sha_rate:.2f}× sha256sum",
            verify_rate / sha_rate >= TARGET_VERIFY_RATIO,
        ),
    ]
    return {
        "name": "bundle",
        "rows": rows,
        "prepare_s": prepare_s,
        "details": {
            "file_system": f"{file_system} ({root})",
            "rounds": rounds,
            "total_bytes": total_bytes,
            "cp_s": cp_s.as_dict(),
            "cp_sync_s": cp_sync_s.as_dict(),
            "write_s": write_s.as_dict(),
            "fsync_write_s": fsync_write_s.as_dict(),
            "cold_write_s": cold_write_s.as_dict(),
            "one_cp_s": one_cp_s.as_dict(),
            "one_cp_sync_s": one_cp_sync_s.as_dict(),
            "rewrite_s": rewrite_s.as_dict(),
            "sha256sum_s": sha_s.as_dict(),
            "verify_s": verify_s.as_dict(),
            "runs": details,
        },
    }


def print_result(result: dict[str, Any]) -> None:
    print(common.table(result["rows"]))
    d = result["details"]
    print()
    print(f"file system: {d['file_system']}; {d['rounds']} rounds; {d['total_bytes']:,} bytes")
    for key in (
        "cp_s",
        "cp_sync_s",
        "write_s",
        "fsync_write_s",
        "cold_write_s",
        "one_cp_s",
        "one_cp_sync_s",
        "rewrite_s",
        "sha256sum_s",
        "verify_s",
    ):
        print(f"  {key[:-2]:<14} {Samples(d[key]['values']).describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 x 10 MiB")
    parser.add_argument("--repeat", type=int, help="rounds (default 3)")
    parser.add_argument("--tmpfs", action="store_true", help="sources and bundle on /dev/shm")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpus")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    result = run(args.quick, args.repeat, args.tmpfs, args.keep)
    print_result(result)
    common.write_results("bundle", {**result, "rows": [r.__dict__ for r in result["rows"]]})


if __name__ == "__main__":
    main()
