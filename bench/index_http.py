"""Benchmark 2: load and verify a 5,000-entry `Packages` index over HTTP on loopback.

Target: `load_index("http://127.0.0.1:PORT/", trust)` under 0.5 s, in a fresh process with a
new trust store (cold: no chain decision remembered).

The index is realistic: 5,000 entries of a school repository (several versions per package,
accented French descriptions, dependencies, changelogs), each signed with `sign_control` by one
of three code-signing certificates issued by the fixture CA (the fixture `codesign` one and two
made with `new_signer`), with `filename`, `size` and `md5sum` added as a scan would, and every
certificate of their chains as `ssl/<fingerprint>.crt`. It is written once under
`bench/data/index-*/Packages`.

It is served by `http.server` on 127.0.0.1 only, from a thread of this process; each
measurement is a new Python process that loads the fixture CA as its trust store, then calls
`load_index`, and reports how long that call took.

    .venv/bin/python bench/index_http.py [--quick] [--repeat N] [--profile]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import random
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import common
from common import Row, Samples

SCRIPT = Path(__file__).resolve()
FULL_COUNT = 5000
QUICK_COUNT = 500
GENERATOR_VERSION = 1
TARGET_S = 0.5
WAPT_S = 9.0


def prepare(quick: bool) -> Path:
    """The repository directory holding `Packages`, written once and reused."""
    from wapt.control import format_records
    from wapt.package import sign_control

    count = QUICK_COUNT if quick else FULL_COUNT
    directory = common.DATA / f"index-{count}"
    params = {"generator": GENERATOR_VERSION, "count": count}
    stamp = common.read_stamp(directory)
    if stamp and stamp.get("params") == params and (directory / "Packages").is_file():
        return directory
    common.fresh_directory(directory)
    print(f"signing {count} index entries in {directory} ...", file=sys.stderr)
    start = time.perf_counter()
    signers = common.signers()
    rng = random.Random(count)
    entries = common.make_entries(count)
    for entry in entries:
        signer = rng.choices(signers, weights=(6, 2, 2))[0]
        sign_control(entry, signer)
        filename = entry.package_filename()
        # what a scan adds: the file's name, size and md5 (here of a plausible size)
        entry["filename"] = filename
        entry["size"] = int(rng.lognormvariate(16, 2)) + 4096
        entry["md5sum"] = hashlib.md5(filename.encode(), usedforsecurity=False).hexdigest()
    certificates = {c.fingerprint: c for s in signers for c in s.chain}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Packages", format_records(entries))
        for fingerprint in sorted(certificates):
            zf.writestr(f"ssl/{fingerprint}.crt", certificates[fingerprint].pem)
    (directory / "Packages").write_bytes(buffer.getvalue())
    common.write_stamp(directory, {"params": params, "certificates": len(certificates)})
    print(f"  done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return directory


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 (a free port), from a thread; yield the URL."""
    handler = partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- the child process -----------------------------------------------------------------------


def worker(url: str, profile: bool) -> None:
    from wapt.repository import load_index

    start = time.perf_counter()
    trust = common.trust_store()
    ready = time.perf_counter()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(load_index, url, trust)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        trust = common.trust_store()  # cold again for the timed call
        ready = time.perf_counter()
    index = load_index(url, trust)
    done = time.perf_counter()
    result = {
        "trust_s": ready - start,
        "load_s": done - ready,
        "accepted": len(index.entries),
        "discarded": len(index.discarded),
        "first_discarded": str(index.discarded[0].reason) if index.discarded else None,
    }
    print(json.dumps(result))


# --- the measurement -------------------------------------------------------------------------


def run(quick: bool = False, repeat: int | None = None) -> dict[str, Any]:
    times = repeat or (5 if quick else 7)
    prepare_start = time.perf_counter()
    directory = prepare(quick)
    prepare_s = time.perf_counter() - prepare_start
    count = QUICK_COUNT if quick else FULL_COUNT
    index_bytes = (directory / "Packages").stat().st_size
    with zipfile.ZipFile(directory / "Packages") as zf:
        text_bytes = zf.getinfo("Packages").file_size
    env = common.child_env()
    load, with_trust, process = Samples(), Samples(), Samples()
    with serve(directory) as url:
        common.run_child(common.python_argv(SCRIPT, "--worker", url), env=env)  # warm-up
        for _ in range(times):
            child = common.run_child(common.python_argv(SCRIPT, "--worker", url), env=env)
            report = child.json()
            if report["accepted"] != count or report["discarded"]:
                raise RuntimeError(f"index did not verify as expected: {report}")
            load.add(report["load_s"])
            with_trust.add(report["load_s"] + report["trust_s"])
            process.add(child.wall)
    rows = [
        Row(
            f"load + verify {count:,}-entry index over HTTP",
            f"< {TARGET_S} s",
            f"best {load.best:.3f} s, median {load.median:.3f} s",
            f"WAPT 1.8.2: {WAPT_S} s" + (f" (for {FULL_COUNT:,})" if quick else ""),
            common.versus_wapt(load.median, WAPT_S, TARGET_S, quick),
            load.median < TARGET_S if not quick else None,
        ),
        Row(
            "same, with `TrustStore.from_path` / whole process",
            "(informative)",
            f"{with_trust.median:.3f} s / {process.median:.3f} s (median)",
            "process includes interpreter start and imports",
            "",
            None,
        ),
    ]
    return {
        "name": "index_http",
        "rows": rows,
        "prepare_s": prepare_s,
        "details": {
            "entries": count,
            "index_zip_bytes": index_bytes,
            "packages_text_bytes": text_bytes,
            "rounds": times,
            "load_index_s": load.as_dict(),
            "trust_and_load_s": with_trust.as_dict(),
            "process_s": process.as_dict(),
        },
    }


def print_result(result: dict[str, Any]) -> None:
    print(common.table(result["rows"]))
    d = result["details"]
    print()
    print(
        f"{d['entries']} entries, index zip {d['index_zip_bytes']:,} bytes "
        f"(Packages text {d['packages_text_bytes']:,} bytes), {d['rounds']} rounds"
    )
    for key in ("load_index_s", "trust_and_load_s", "process_s"):
        print(f"  {key[:-2]:<16} {Samples(d[key]['values']).describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 entries, 5 rounds")
    parser.add_argument("--repeat", type=int, help="timed rounds (default 7, quick 5)")
    parser.add_argument("--profile", action="store_true", help="cProfile one load")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.profile)
        return
    if args.profile:
        directory = prepare(args.quick)
        with serve(directory) as url:
            child = common.run_child(
                common.python_argv(SCRIPT, "--profile", "--worker", url), env=common.child_env()
            )
        print(child.stderr)
        return
    result = run(args.quick, args.repeat)
    print_result(result)
    common.write_results("index_http", {**result, "rows": [r.__dict__ for r in result["rows"]]})


if __name__ == "__main__":
    main()
