"""Benchmark: the site server's host store at 5,000 hosts (issue 5: hosts and rollouts).

Targets: one report ingested (`HostStore.ingest`: verify the Ed25519 signature with the pinned
key, check the sequence, rewrite one shard) in under 20 ms; the admin's host list page p95
under 300 ms with 20 connections.

Data (made once under `bench/data/site-hosts-<N>/`, reused while its stamp matches): a site
with N hosts (5,000; 500 with `--quick`) registered and reported through the real
`HostStore.register` and `ingest`, each with ~40 installed packages of a pool of 160, 10 % with
pending work, 5 % with a failed package (a 2 KiB log), a few teacher events; 50 machine
groups of 100 hosts with a required package each (the assignments behind rollouts). Host keys
are derived from their index, so later runs can sign new reports for the cached hosts.

(a) Ingest: 200 hosts drawn at random each get a new signed report (signed before timing);
each `ingest` is timed alone. References in the same run, on the same bytes: `write_atomic`
of the report in the store's directory (a plain durable write of that size, the floor of any
store that keeps the report) and its SHA-256.

(b) The host list: the real app under waitress (`comptoir portal serve` with the site's
settings), an admin signed in at `/admin/login`, then `wrk -c 20 -t 2 -d 15s` (3 s quick) on
`/admin/hosts` (the whole page: filters, counts, 50 rows), the search-as-you-type fragment
(`/admin/hosts?q=WORD`, `HX-Request`), the failed-hosts filter, and the rollout index. The
reference is a static file through the same server (`/static/vendor/htmx/htmx.min.js`).

    .venv/bin/python bench/site_hosts.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import common
import portal_load
from common import Row

FULL_HOSTS = 5000
QUICK_HOSTS = 500
PACKAGES_PER_HOST = 40
POOL = 160
GROUP_SIZE = 100
INGEST_SAMPLES = 200
INGEST_TARGET_MS = 20.0
LIST_TARGET_MS = 300.0
ADMIN = "bench-admin"
DATA_FORMAT = 3  # bump when the generated data changes
SEARCHES = ["s12", "pc07", "salle-3", "jmoulin", "s4", "pc1", "0042", "s20-pc", "moulin-s3", "pc"]


def host_uuid(number: int) -> str:
    return f"4c4c4544-0042-3010-8053-{number:012d}"


def host_key(number: int) -> Any:
    from agent_bridge.reports import host_key_from_seed

    return host_key_from_seed(hashlib.sha256(f"bench host key {number}".encode()).digest())


def package_pool() -> list[str]:
    names = sorted({e.package for e in common.make_entries(400)})
    return names[:POOL]


def make_report(number: int, seq: int, rng: random.Random, pool: list[str]) -> Any:
    """A realistic report of host `number`: ~40 packages, sometimes pending work or a failure."""
    from agent_bridge.reports import (
        FailedPackage,
        HostReport,
        InstalledPackage,
        PendingWork,
        ReportEvent,
    )

    chosen = rng.sample(pool, PACKAGES_PER_HOST + rng.randint(-5, 5))
    installed = tuple(
        InstalledPackage(
            name, f"{rng.randint(1, 30)}.{rng.randint(0, 9)}-1", "PROD", "2026-11-20T08:00:00", "OK"
        )
        for name in sorted(chosen)
    )
    pending = PendingWork()
    if rng.random() < 0.10:
        pending = PendingWork(
            install=(f"{rng.choice(pool)}(=2.0-1)",), at_shutdown=(f"{rng.choice(pool)}(=1.0-1)",)
        )
    failed: tuple[Any, ...] = ()
    if rng.random() < 0.05:
        log = "\n".join(f"line {i}: copying file {i} of the payload…" for i in range(50))
        failed = (
            FailedPackage(
                rng.choice(pool), "1.0-1", "2026-11-20T08:00:00", log + "\nerror: exit code 1603"
            ),
        )
    events = tuple(
        ReportEvent(
            seq * 10 + i,
            "2026-11-20T09:00:00Z",
            f"prof{rng.randint(1, 99)}",
            "install",
            rng.choice(pool),
            "done",
        )
        for i in range(rng.choice((0, 0, 0, 1, 2)))
    )
    room, seat = divmod(number, 25)
    return HostReport(
        host_uuid=host_uuid(number),
        seq=seq,
        created="2026-11-20T10:00:00Z",
        computer_name=f"CLG-JMOULIN-S{room:03d}-PC{seat:02d}",
        os="Windows 10 Pro 22H2",
        agent_version="0.1.0",
        installed=installed,
        pending=pending,
        failed=failed,
        events=events,
    )


def site_files(root: Path) -> Path:
    """The site's layout and settings file (admin in a local accounts file)."""
    from agent_bridge.agent.auth import write_accounts_file

    (root / "repository").mkdir(parents=True, exist_ok=True)
    accounts = root / "accounts.toml"
    if not accounts.exists():
        write_accounts_file(
            accounts,
            {ADMIN: (portal_load.agent_latency.PASSWORD, "Bench Admin", ["comptoir-admins"])},
        )
    config = root / "site.toml"
    config.write_text(
        f'data_dir = "{root / "portal"}"\n[site]\ndata_dir = "{root / "data"}"\n'
        f'repository_dir = "{root / "repository"}"\naccounts_file = "{accounts}"\n',
        "utf-8",
    )
    return config


def prepare(count: int) -> tuple[Path, float]:
    """The site with `count` hosts (made once); its directory and the preparation time."""
    from agent_bridge.reports import public_key_text, sign_report
    from portal.site.assignments import AssignmentStore
    from portal.site.hosts import HostStore
    from portal.site.model import MachineGroup

    start = time.perf_counter()
    root = common.DATA / f"site-hosts-{count}"
    params = {"format": DATA_FORMAT, "hosts": count}
    if common.read_stamp(root) == params:
        site_files(root)
        return root, time.perf_counter() - start
    common.fresh_directory(root)
    site_files(root)
    store = HostStore(root / "data")
    pool = package_pool()
    rng = random.Random(20261121)
    for number in range(count):
        uuid = host_uuid(number)
        key = host_key(number)
        store.register(uuid, public_key_text(key), "")
        store.ingest(sign_report(make_report(number, 1, rng, pool), key), host_uuid=uuid)
        if number % 500 == 499:
            print(f"  {number + 1} hosts", file=sys.stderr, flush=True)
    assignments = AssignmentStore(root / "data")
    for group in range(count // GROUP_SIZE):
        hosts = tuple(host_uuid(n) for n in range(group * GROUP_SIZE, (group + 1) * GROUP_SIZE))
        assignments.save_group(MachineGroup(f"salle-{group}", f"Salle {group}", hosts), create=True)
        assignments.assign(pool[group % len(pool)], "required", group=f"salle-{group}")
    common.write_stamp(root, params)
    return root, time.perf_counter() - start


# --- (a) ingest -----------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure_ingest(root: Path, count: int) -> dict[str, Any]:
    from agent_bridge.reports import sign_report
    from portal.site.hosts import HostStore
    from wapt.fsutil import write_atomic

    store = HostStore(root / "data")
    store.summaries()  # the index, as a running server has it
    pool = package_pool()
    rng = random.Random(time.time_ns())
    chosen = rng.sample(range(count), min(INGEST_SAMPLES, count))
    signed = []
    for number in chosen:
        record = store.get(host_uuid(number))
        assert record is not None
        report = make_report(number, record.last_seq + 1, rng, pool)
        signed.append((host_uuid(number), sign_report(report, host_key(number))))
    ingest_ms, write_ms, sha_ms = [], [], []
    reference = root / "data" / "hosts" / "reference-write.json"
    for uuid, data in signed:
        began = time.perf_counter()
        store.ingest(data, host_uuid=uuid)
        ingest_ms.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        write_atomic(reference, data, mode=0o600)
        write_ms.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        sha_ms.append((time.perf_counter() - began) * 1000)
    reference.unlink(missing_ok=True)
    shards = sorted((root / "data" / "hosts").glob("shard-*.json"))
    sizes = [p.stat().st_size for p in shards]
    return {
        "samples": len(signed),
        "report_bytes_median": statistics.median(len(d) for _, d in signed),
        "ingest_ms": {
            "median": statistics.median(ingest_ms),
            "p95": percentile(ingest_ms, 0.95),
            "max": max(ingest_ms),
        },
        "write_atomic_ms": {
            "median": statistics.median(write_ms),
            "p95": percentile(write_ms, 0.95),
        },
        "sha256_ms": {"median": statistics.median(sha_ms), "p95": percentile(sha_ms, 0.95)},
        "shard_bytes": {"median": statistics.median(sizes), "max": max(sizes), "files": len(sizes)},
    }


# --- (b) the host list under load -------------------------------------------------------------


@contextmanager
def site_server(root: Path) -> Iterator[int]:
    """`comptoir portal serve --config site.toml` (waitress) on a free loopback port."""
    port = portal_load.agent_latency.free_port()
    log = root / "portal.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
    argv = [
        str(Path(sys.executable).parent / "comptoir"),
        "portal",
        "serve",
        "--config",
        str(root / "site.toml"),
        "--port",
        str(port),
    ]
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if portal_load.request(port, "GET", "/admin/login")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the site server did not start: {log.read_text('utf-8')[-2000:]}"
                )
            time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def admin_login(port: int) -> str:
    """Sign the admin in at /admin/login as a browser does; the session cookie."""
    status, headers, page = portal_load.request(port, "GET", "/admin/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if status != 200 or not found:
        raise RuntimeError(f"GET /admin/login answered {status} without a CSRF token")
    anonymous = portal_load._session_cookie(headers)
    form = {
        "username": ADMIN,
        "password": portal_load.agent_latency.PASSWORD,
        "csrf_token": found.group(1),
    }
    status, headers, _ = portal_load.request(
        port, "POST", "/admin/login", cookie=anonymous, form=form
    )
    if status != 303:
        raise RuntimeError(f"POST /admin/login answered {status}")
    return portal_load._session_cookie(headers)


def measure_list(root: Path, duration: float) -> dict[str, Any]:
    targets = [
        ("static", "static file (reference)", [portal_load.STATIC_PATH], "htmx", False),
        ("page", "host list page", ["/admin/hosts"], 'class="host-row', False),
        (
            "search",
            "search as you type (fragment)",
            [f"/admin/hosts?q={w}" for w in SEARCHES],
            'id="host-results"',
            True,
        ),
        (
            "failed",
            "failed hosts filter",
            ["/admin/hosts?status=failed"],
            'id="host-results"',
            False,
        ),
        ("rollouts", "rollout index", ["/admin/rollout"], 'id="rollout-results"', False),
    ]
    loads: dict[str, Any] = {}
    with site_server(root) as port:
        cookie = admin_login(port)
        began = time.perf_counter()
        first = portal_load.check_page(port, cookie, "/admin/hosts", 'class="host-row')
        first_s = time.perf_counter() - began
        for key, label, paths, marker, htmx in targets:
            for path in paths:
                portal_load.check_page(port, cookie, path, marker, htmx=htmx)
            load = portal_load.run_wrk(
                label, port, paths, cookie=cookie, marker=marker, duration=duration, htmx=htmx
            )
            single = portal_load.run_wrk(
                label,
                port,
                paths,
                cookie=cookie,
                marker=marker,
                duration=max(2.0, duration / 3),
                htmx=htmx,
                connections=1,
            )
            loads[key] = {
                "label": label,
                "c20": load.as_dict(),
                "c1": single.as_dict(),
                "p95_ms": load.ms("p95"),
                "p50_ms": load.ms("p50"),
                "rps": load.rps,
                "failures": load.failures,
                "c1_p95_ms": single.ms("p95"),
            }
    return {"first_page_s": first_s, "page_bytes": len(first.encode()), "loads": loads}


def run(quick: bool = False, duration: float | None = None) -> dict[str, Any]:
    count = QUICK_HOSTS if quick else FULL_HOSTS
    duration = duration or (portal_load.QUICK_DURATION_S if quick else portal_load.FULL_DURATION_S)
    root, prepare_s = prepare(count)
    ingest = measure_ingest(root, count)
    listing = measure_list(root, duration)
    judged = not quick
    i = ingest["ingest_ms"]
    w = ingest["write_atomic_ms"]
    rows = [
        Row(
            "site_hosts",
            f"one report ingested < {INGEST_TARGET_MS:g} ms ({count} hosts)",
            f"median {i['median']:.1f} ms, p95 {i['p95']:.1f} ms",
            f"write_atomic of the same bytes: median {w['median']:.1f} ms, p95 {w['p95']:.1f} ms",
            f"{i['median'] / w['median']:.1f}× the durable write",
            (i["p95"] < INGEST_TARGET_MS) if judged else None,
        ),
    ]
    static = listing["loads"]["static"]
    for key in ("page", "search", "failed", "rollouts"):
        load = listing["loads"][key]
        target = f"< {LIST_TARGET_MS:g} ms p95" if key == "page" else "—"
        rows.append(
            Row(
                "site_hosts",
                f"{load['label']}, 20 connections, {target}",
                f"p95 {load['p95_ms']:.0f} ms, {load['rps']:.0f} req/s, "
                f"{load['failures']} failed (1 connection: p95 {load['c1_p95_ms']:.0f} ms)",
                f"static file p95 {static['p95_ms']:.0f} ms",
                f"{load['p95_ms'] / max(static['p95_ms'], 0.001):.1f}× the static file",
                (
                    (load["p95_ms"] < LIST_TARGET_MS and load["failures"] == 0)
                    if key == "page"
                    else None
                )
                if judged
                else None,
            )
        )
    return {
        "name": "site_hosts",
        "rows": rows,
        "prepare_s": prepare_s,
        "details": {"hosts": count, "duration_s": duration, "ingest": ingest, **listing},
    }


def print_result(result: dict[str, Any]) -> None:
    print(common.table(result["rows"]))
    d = result["details"]
    ingest = d["ingest"]
    print(
        f"\n{d['hosts']} hosts; reports of {ingest['report_bytes_median']:,.0f} bytes (median); "
        f"sha256 of a report {ingest['sha256_ms']['median']:.3f} ms; ingest max "
        f"{ingest['ingest_ms']['max']:.1f} ms; shards: {ingest['shard_bytes']['files']} files, "
        f"median {ingest['shard_bytes']['median'] / 1024:,.0f} KiB, max "
        f"{ingest['shard_bytes']['max'] / 1024:,.0f} KiB"
    )
    print(
        f"first host list after start-up (index built): {d['first_page_s']:.2f} s; page "
        f"{d['page_bytes'] / 1024:,.0f} KiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_HOSTS} hosts, 3 s runs")
    parser.add_argument("--duration", type=float, help="seconds per wrk run")
    args = parser.parse_args()
    info = common.machine()
    print("## Machine\n")
    print(common.machine_markdown(info))
    print()
    result = run(args.quick, args.duration)
    print_result(result)
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    out = common.RESULTS / "site_hosts.json"
    serializable = {**result, "rows": [r.__dict__ for r in result["rows"]], "machine": info}
    out.write_text(json.dumps(serializable, indent=1, default=str), "utf-8")
    return 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        sys.exit(main())
