"""Benchmark 4: Comptoir's agent through the bridge: install latency, catalog listing, idle memory.

The real agent process (`comptoir agent serve --config`) runs on 127.0.0.1. Its data directory
is under `bench/data/agent-run/`, on the disk, so its fsyncs cost what they cost. A local
accounts file holds one admin (a member of `admin_group`, who sees every package). Every
request goes through `agent_bridge.client.AgentClient`.

1. **Install latency.** Timed from `AgentClient.install` of a no-op package (its `install()`
   does nothing) until `wait_for_task` reports the task done, by long polls of
   `/tasks_status.json`. Two rounds of the same length: distinct no-op packages installed once
   each, download from the loopback repository included; then forced re-installs (`force=1`)
   of one installed package. Target: median under 80 ms (WAPT 1.8.2's own agent: 0.166 s).
   Same-run references: `python -I -c pass` (the runner starts one child interpreter per
   `setup.py` call), that child importing `setuphelpers`, and a bare HTTP round trip to `/ping`.
2. **Catalog listing.** `AgentClient.packages(admin, latest=True)` from an agent whose
   repository is a signed 5,000-entry index served over loopback HTTP. The entries are those of
   `common.make_entries`, signed as in `index_http.py`, with two changes: `target_os` is `all`,
   because the agent drops `windows` entries on Linux, and each entry has its own package name.
   The second change works around a bridge/agent mismatch with several versions per name: see
   `docs/benchmarks.md`. Target: median under 100 ms.
3. **Idle memory.** VmRSS and VmHWM of the agent after start-up and its first update, idle for
   2 s, with the 5,000-entry catalog (target under 50 MiB; WAPT 1.8.2: 60.5 MiB) and with a
   tiny one (the no-op packages alone).

`--stages` runs the same installs and listings against an instrumented agent instead. It is the
same code, started by this script instead of the CLI, with timing wrappers around its stages.
It prints where the time goes.

    .venv/bin/python bench/agent_latency.py [--quick] [--repeat N] [--stages]
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import http.client
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import index_http
from common import Row, Samples

SCRIPT = Path(__file__).resolve()
FULL_COUNT = 5000
QUICK_COUNT = 500
GENERATOR_VERSION = 1
INSTALL_TARGET_S = 0.080
WAPT_INSTALL_S = 0.166
LIST_TARGET_S = 0.100
RSS_TARGET_MIB = 50.0
WAPT_RSS_MIB = 60.5
IDLE_S = 2.0
HOST_UUID = "5b1e3c9a-7d2f-4e8b-9a6c-0f1e2d3c4b5a"
ADMIN, ADMIN_GROUP = "bench-admin", "comptoir-admins"
PASSWORD = "bench-only-password"  # a throwaway account of a loopback test agent
NOOP_SETUP = "def install():\n    pass\n"
RUN_DIR = common.DATA / "agent-run"


# --- data ------------------------------------------------------------------------------------


def prepare_catalog(quick: bool, *, distinct: bool) -> Path:
    """The directory holding the signed `Packages` of `count` entries, written once and reused.

    As `index_http.prepare`, with `target_os` `all` (the agent drops `windows` entries on
    Linux) and no file behind the entries: listing never opens one. With `distinct`, every
    entry gets its own package name (`ac-firefox-0042`): 5,000 packages of one version each.
    Without, the names of `make_entries` are kept: 320 packages of about 15 versions each.
    """
    from wapt.control import format_records
    from wapt.package import sign_control

    count = QUICK_COUNT if quick else FULL_COUNT
    shape = "distinct" if distinct else "versions"
    directory = common.DATA / f"agent-index-{count}-{shape}"
    params = {"generator": GENERATOR_VERSION, "count": count, "target_os": "all", "shape": shape}
    stamp = common.read_stamp(directory)
    if stamp and stamp.get("params") == params and (directory / "Packages").is_file():
        return directory
    common.fresh_directory(directory)
    print(f"signing {count} index entries in {directory} ...", file=sys.stderr)
    start = time.perf_counter()
    signers = common.signers()
    rng = random.Random(count)
    entries = common.make_entries(count)
    for number, entry in enumerate(entries, start=1):
        entry["target_os"] = "all"
        if distinct:
            entry["package"] = f"{entry.package}-{number:04d}"
        signer = rng.choices(signers, weights=(6, 2, 2))[0]
        sign_control(entry, signer)
        filename = entry.package_filename()
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


def build_noop_repository(directory: Path, count: int) -> list[str]:
    """`count` real signed no-op packages (`bench-noop-NNN`) and their scanned index."""
    from wapt.control import PackageEntry, format_control
    from wapt.package import build_package
    from wapt.repository import scan_repository

    signer = common.fixture_signer("codesign")
    sources = directory / "src"
    repo = directory / "repo"
    repo.mkdir(parents=True)
    names = []
    for number in range(1, count + 1):
        name = f"bench-noop-{number:03d}"
        source = sources / name
        (source / "WAPT").mkdir(parents=True)
        entry = PackageEntry(
            {
                "package": name,
                "version": "1.0-1",
                "architecture": "all",
                "section": "base",
                "priority": "optional",
                "name": f"No-op {number}",
                "description": "A package whose install() does nothing (benchmark)",
                "maturity": "PROD",
                "target_os": "all",
            }
        )
        (source / "WAPT" / "control").write_text(format_control(entry), "utf-8")
        (source / "setup.py").write_text(NOOP_SETUP, "utf-8")
        build_package(source, signer, repo)
        names.append(name)
    scan_repository(repo)
    return names


def write_accounts(path: Path) -> None:
    from agent_bridge.agent.auth import write_accounts_file

    write_accounts_file(path, {ADMIN: (PASSWORD, ADMIN, [ADMIN_GROUP])})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(root: Path, repositories: dict[str, str], accounts: Path) -> tuple[Path, int]:
    """The agent's TOML: loopback port, local accounts, every maturity and locale of the data."""
    port = free_port()
    (root / "installed-software").mkdir(parents=True, exist_ok=True)
    repos = "".join(
        f'\n[[repositories]]\nname = "{name}"\nurl = "{url}"\n'
        for name, url in repositories.items()
    )
    config = f"""
data_dir = "{root / "agent-data"}"
trusted_certs = "{common.PKI / "ca.crt"}"
listen_host = "127.0.0.1"
port = {port}
host_uuid = "{HOST_UUID}"
install_timeout = 60
admin_group = "{ADMIN_GROUP}"
accounts_file = "{accounts}"
maturities = ["PROD", "PREPROD", "DEV"]
locales = ["fr", "en", "de"]
architectures = ["x64", "x86"]
log_level = "INFO"

[install_env]
COMPTOIR_INSTALL_ROOT = "{root / "installed-software"}"
{repos}"""
    path = root / "agent.toml"
    path.write_text(config, "utf-8")
    return path, port


# --- the agent process -----------------------------------------------------------------------


@dataclass
class Agent:
    process: subprocess.Popen[bytes]
    port: int
    started: float
    timings: Path | None = None  # the instrumented agent's timing file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def stop_agent(agent: Agent) -> None:
    """SIGTERM, then SIGKILL after 10 s: the agent's port and memory are free afterwards."""
    if agent.process.poll() is None:
        agent.process.send_signal(signal.SIGTERM)
        try:
            agent.process.wait(10)
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.process.wait(10)


@contextmanager
def agent_process(
    config: Path, port: int, log: Path, *, timings: Path | None = None
) -> Iterator[Agent]:
    """`comptoir agent serve --config CONFIG` (or, with `timings`, this script's instrumented
    agent writing its stage timings there), stopped on the way out."""
    if timings is None:
        argv = [str(Path(sys.executable).parent / "comptoir"), "agent", "serve"]
        argv += ["--config", str(config)]
    else:
        argv = [sys.executable, str(SCRIPT), "--instrumented-agent", str(config), str(timings)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    agent = Agent(process, port, started, timings)
    try:
        yield agent
    finally:
        stop_agent(agent)


def wait_first_update(client: Any, timeout: float = 120) -> Any:
    """Wait for the start-up `WaptUpdate` task to finish; return it (it must be done)."""
    status = client.tasks_status(-1, timeout_ms=0)
    updates = [t for t in status.tasks or () if t.classname == "WaptUpdate"]
    if not updates:
        raise RuntimeError("the agent queued no update at start-up")
    done = client.wait_for_task(updates[0].id, timeout=timeout)
    if done.state != "done":
        raise RuntimeError(f"the first update failed: {done.logs}")
    return done


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile (MiB) and Threads of `pid`, from /proc/PID/status."""
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"}
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            number = float(value.split()[0])
            found[key] = number if key == "Threads" else number / 1024
    return found


# --- references ------------------------------------------------------------------------------


def child_python_samples(times: int) -> tuple[Samples, Samples]:
    """Wall time of `python -I -c pass`, and of the runner's child importing `setuphelpers`."""
    from agent_bridge.agent.runner import RUNTIME_DIR

    bare, helpers = Samples(), Samples()
    code = f"import sys; sys.path.insert(0, {str(RUNTIME_DIR)!r}); import setuphelpers"
    argv_bare = [sys.executable, "-I", "-c", "pass"]
    argv_helpers = [sys.executable, "-I", "-B", "-u", "-X", "utf8", "-c", code]
    for _ in range(2):  # warm-up
        common.run_child(argv_bare)
        common.run_child(argv_helpers)
    for _ in range(times):
        bare.add(common.run_child(argv_bare).wall)
        helpers.add(common.run_child(argv_helpers).wall)
    return bare, helpers


def raw_get(port: int, target: str, token: str | None = None) -> tuple[float, bytes]:
    """One GET with `http.client` alone, new connection as the bridge does: (seconds, body)."""
    headers = {"Connection": "close"}
    if token is not None:
        auth = base64.b64encode(f"{ADMIN}:{token}".encode()).decode()
        headers["Authorization"] = f"Basic {auth}"
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", target, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        raise RuntimeError(f"{target} answered {response.status}")
    return elapsed, body


def raw_samples(port: int, target: str, token: str | None, times: int) -> tuple[Samples, int]:
    samples, size = Samples(), 0
    raw_get(port, target, token)  # warm-up
    for _ in range(times):
        seconds, body = raw_get(port, target, token)
        samples.add(seconds)
        size = len(body)
    return samples, size


# --- the measurements ------------------------------------------------------------------------


def _iso_seconds(text: str | None) -> float:
    from datetime import datetime

    if not text:
        return float("nan")
    return datetime.fromisoformat(text).timestamp()


@dataclass
class InstallRun:
    total: Samples
    queued: Samples  # create_date -> start_date, by the agent's clock
    work: Samples  # start_date -> finish_date
    polls: list[int]


def install_round(client: Any, session: Any, names: list[str], *, force: bool) -> InstallRun:
    """Install each of `names` (forced if asked), timing request -> task reported done."""
    run = InstallRun(Samples(), Samples(), Samples(), [])
    original = client.tasks_status
    calls = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    client.tasks_status = counted
    try:
        for name in names:
            calls[0] = 0
            start = time.perf_counter()
            task = client.install(session, name, force=force)
            done = client.wait_for_task(task.id, timeout=60)
            elapsed = time.perf_counter() - start
            if done.state != "done":
                raise RuntimeError(f"install of {name} ended {done.state}: {done.logs}")
            run.total.add(elapsed)
            began = _iso_seconds(done.start_date)
            run.queued.add(began - _iso_seconds(done.create_date))
            run.work.add(_iso_seconds(done.finish_date) - began)
            run.polls.append(calls[0])
    finally:
        del client.tasks_status
    return run


def listing_samples(client: Any, session: Any, times: int) -> tuple[Samples, int]:
    samples, rows = Samples(), 0
    client.packages(session, latest=True)  # warm-up
    for _ in range(times):
        start = time.perf_counter()
        rows = len(client.packages(session, latest=True))
        samples.add(time.perf_counter() - start)
    return samples, rows


def columns_intact(client: Any, session: Any, port: int) -> bool:
    """Whether the bridge's `editor` of the first listed package is the one the agent sent."""
    _, body = raw_get(port, "/packages.json?latest=1", session.token)
    sent = {row["package"]: row.get("editor", "") for row in json.loads(body)}
    first = next(p for p in client.packages(session) if sent.get(p.package))
    return bool(first.editor == sent[first.package])


def agent_code() -> dict[str, str]:
    """What code is measured: the checkout's HEAD (read only) and a digest of the sources the
    agent and the bridge run (`agent_bridge/`, `wapt/`, the `comptoir` CLI)."""
    digest = hashlib.sha256()
    for pattern in ("agent_bridge/**/*.py", "wapt/*.py", "comptoir/*.py"):
        for path in sorted(common.ROOT.glob(pattern)):
            digest.update(str(path.relative_to(common.ROOT)).encode() + b"\0" + path.read_bytes())
    head = subprocess.run(
        ["git", "-C", str(common.ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {"head": head or "none", "sources": digest.hexdigest()[:12]}


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


@dataclass
class Site:
    """The data every agent of a run shares: catalogs, no-op repository, accounts."""

    root: Path
    count: int
    noop_names: list[str]
    accounts: Path
    urls: dict[str, str]


@contextmanager
def site(quick: bool, installs: int) -> Iterator[tuple[Site, float]]:
    """Prepare the data and serve the three repositories on loopback; yield it and the time
    its preparation took."""
    start = time.perf_counter()
    catalog_dir = prepare_catalog(quick, distinct=True)
    versions_dir = prepare_catalog(quick, distinct=False)
    root = common.fresh_directory(RUN_DIR)
    noop_names = build_noop_repository(root / "noop", installs)
    accounts = root / "accounts.toml"
    write_accounts(accounts)
    prepare_s = time.perf_counter() - start
    with ExitStack() as stack:
        urls = {
            "noop": stack.enter_context(index_http.serve(root / "noop" / "repo")),
            "school": stack.enter_context(index_http.serve(catalog_dir)),
            "versions": stack.enter_context(index_http.serve(versions_dir)),
        }
        count = QUICK_COUNT if quick else FULL_COUNT
        yield Site(root, count, noop_names, accounts, urls), prepare_s


def start_agent(
    stack: ExitStack,
    where: Site,
    name: str,
    repositories: list[str],
    details: dict[str, Any],
    *,
    instrumented: bool = False,
) -> tuple[Agent, Any]:
    """Start an agent on some of the site's repositories, wait for its first update, idle
    `IDLE_S`, and note how long it took to be ready and its memory then."""
    from agent_bridge.client import AgentClient

    directory = where.root / name
    directory.mkdir()
    config, port = write_config(
        directory, {repo: where.urls[repo] for repo in repositories}, where.accounts
    )
    timings = directory / "timings.json" if instrumented else None
    agent = stack.enter_context(
        agent_process(config, port, directory / "agent.log", timings=timings)
    )
    client = AgentClient(agent.url, connect_retries=30.0, timeout=30.0)
    client.ping()
    update = wait_first_update(client)
    details[f"{name}_ready_s"] = time.perf_counter() - agent.started
    details[f"{name}_update"] = {
        k: update.result.get(k) for k in ("count", "discarded_count", "errors")
    }
    time.sleep(IDLE_S)
    details[f"{name}_idle"] = proc_memory(agent.process.pid)
    return agent, client


def run(quick: bool = False, repeat: int | None = None) -> dict[str, Any]:
    from agent_bridge.errors import BridgeError

    installs = repeat or (10 if quick else 40)
    list_rounds = repeat or (5 if quick else 15)
    few = min(installs, 20)
    details: dict[str, Any] = {"installs": installs, "list_rounds": list_rounds}
    details["code"] = code = agent_code()
    details["load_average_before"] = os.getloadavg()
    with site(quick, installs) as (where, prepare_s), ExitStack() as stack:
        count = details["entries"] = where.count
        names = where.noop_names

        # --- agent 1: the no-op packages alone (tiny catalog): memory, then installs
        agent, client = start_agent(stack, where, "tiny", ["noop"], details)
        session = client.login(ADMIN, PASSWORD)
        if len(client.packages(session)) != installs:
            raise RuntimeError("the tiny catalog does not list every no-op package")
        ping, _ = raw_samples(agent.port, "/ping", None, 30)
        distinct = install_round(client, session, names, force=False)
        forced = install_round(client, session, [names[0]] * installs, force=True)
        poll = "/tasks_status.json?last_event_id=-1&timeout=0"
        status_tiny, status_tiny_size = raw_samples(agent.port, poll, None, 5)
        details["tiny_after"] = proc_memory(agent.process.pid)
        stop_agent(agent)
        bare, helpers = child_python_samples(15)

        # --- agent 2: 5,000 packages and the no-op ones: memory, listing, installs
        agent, client = start_agent(stack, where, "big", ["school", "noop"], details)
        session = client.login(ADMIN, PASSWORD)
        listing, rows = listing_samples(client, session, list_rounds)
        if rows != count + installs:
            raise RuntimeError(f"catalog: {rows} rows, expected {count + installs}")
        raw, size = raw_samples(agent.port, "/packages.json?latest=1", session.token, list_rounds)
        details["bridge_columns_intact"] = columns_intact(client, session, agent.port)
        big = install_round(client, session, names[:few], force=False)
        big_forced = install_round(client, session, [names[0]] * few, force=True)
        status_big, status_big_size = raw_samples(agent.port, poll, None, 5)
        details["big_after"] = proc_memory(agent.process.pid)
        stop_agent(agent)

        # --- agent 3: index_http's shape (320 names, about 15 versions each)
        agent, client = start_agent(stack, where, "versions", ["versions"], details)
        session = client.login(ADMIN, PASSWORD)
        raw_versions, size_versions = raw_samples(
            agent.port, "/packages.json?latest=1", session.token, list_rounds
        )
        try:
            details["versions_rows"] = len(client.packages(session, latest=True))
            details["versions_bridge_error"] = None
        except BridgeError as e:
            details["versions_rows"] = None
            details["versions_bridge_error"] = f"{type(e).__name__}: {e}"
        stop_agent(agent)

    if agent_code() != code:
        print("WARNING: the agent's code changed while this benchmark ran", file=sys.stderr)
        details["code"]["changed_during_run"] = "yes"
    details["load_average_after"] = os.getloadavg()
    judged = not quick
    rss_big, rss_tiny = details["big_idle"]["VmRSS"], details["tiny_idle"]["VmRSS"]
    after = details["big_after"]
    wapt_install = f"WAPT 1.8.2: {WAPT_INSTALL_S * 1000:.0f} ms"
    install_target = f"< {INSTALL_TARGET_S * 1000:.0f} ms"
    rows_out = [
        Row(
            "no-op install, request → done via bridge (distinct packages, first install)",
            install_target,
            _ms_line(distinct.total),
            wapt_install,
            _share(distinct.total.median, INSTALL_TARGET_S, WAPT_INSTALL_S, judged),
            distinct.total.median < INSTALL_TARGET_S if judged else None,
        ),
        Row(
            "same, forced re-install of an installed no-op package (`force=1`)",
            install_target,
            _ms_line(forced.total),
            wapt_install,
            _share(forced.total.median, INSTALL_TARGET_S, WAPT_INSTALL_S, judged),
            forced.total.median < INSTALL_TARGET_S if judged else None,
        ),
        Row(
            "references for the install",
            "(informative)",
            f"`python -I -c pass` {bare.median * 1000:.1f} ms; child + `import setuphelpers` "
            f"{helpers.median * 1000:.1f} ms; `/ping` round trip {ping.median * 1000:.2f} ms",
            "medians, same run",
            "",
            None,
        ),
        Row(
            f"same two, agent holding the {count:,}-entry catalog",
            "(informative)",
            f"first install: median {big.total.median * 1000:.0f} ms; forced: median "
            f"{big_forced.total.median * 1000:.0f} ms (n={few} each)",
            wapt_install + " (catalog size not known)",
            "",
            None,
        ),
        Row(
            f"list {count:,}-package catalog, `packages(admin, latest=True)`",
            f"< {LIST_TARGET_S * 1000:.0f} ms",
            f"median {listing.median * 1000:.1f} ms, p90 {p90(listing.values) * 1000:.1f} ms, "
            f"best {listing.best * 1000:.1f} ms ({rows:,} rows)",
            f"HTTP alone {raw.median * 1000:.1f} ms ({size / 1024:,.0f} KiB)",
            _share(listing.median, LIST_TARGET_S, None, judged),
            listing.median < LIST_TARGET_S if judged else None,
        ),
        Row(
            f"same, `index_http` shape: {count:,} entries of 320 packages",
            "(informative)",
            "bridge: " + (details["versions_bridge_error"] or f"{details['versions_rows']} rows"),
            f"HTTP alone {raw_versions.median * 1000:.1f} ms ({size_versions / 1024:,.0f} KiB)",
            "",
            None,
        ),
        Row(
            f"idle agent RSS, {count:,}-package catalog",
            f"< {RSS_TARGET_MIB:.0f} MiB",
            f"{rss_big:.1f} MiB (VmHWM {details['big_idle']['VmHWM']:.1f} MiB)",
            f"WAPT 1.8.2: {WAPT_RSS_MIB} MiB",
            f"{rss_big / RSS_TARGET_MIB:.0%} of budget" if judged else "quick run: not judged",
            rss_big < RSS_TARGET_MIB if judged else None,
        ),
        Row(
            f"idle agent RSS, tiny catalog ({installs} packages)",
            "(informative)",
            f"{rss_tiny:.1f} MiB (VmHWM {details['tiny_idle']['VmHWM']:.1f} MiB)",
            f"WAPT 1.8.2: {WAPT_RSS_MIB} MiB",
            f"{rss_tiny / RSS_TARGET_MIB:.0%} of the 50 MiB budget",
            None,
        ),
        Row(
            f"agent RSS after {list_rounds * 2 + 4} listings and {few * 2} installs",
            "(informative)",
            f"{after['VmRSS']:.1f} MiB (VmHWM {after['VmHWM']:.1f} MiB)",
            "",
            "",
            None,
        ),
    ]
    details.update(
        install_distinct_s=distinct.total.as_dict(),
        install_distinct_queued_s=distinct.queued.as_dict(),
        install_distinct_work_s=distinct.work.as_dict(),
        install_distinct_polls=distinct.polls,
        install_forced_s=forced.total.as_dict(),
        install_forced_queued_s=forced.queued.as_dict(),
        install_forced_work_s=forced.work.as_dict(),
        install_forced_polls=forced.polls,
        install_big_catalog_s=big.total.as_dict(),
        install_big_catalog_work_s=big.work.as_dict(),
        install_big_catalog_forced_s=big_forced.total.as_dict(),
        python_pass_s=bare.as_dict(),
        python_setuphelpers_s=helpers.as_dict(),
        ping_s=ping.as_dict(),
        list_latest_s=listing.as_dict(),
        list_latest_http_s=raw.as_dict(),
        list_latest_rows=rows,
        list_latest_bytes=size,
        list_versions_http_s=raw_versions.as_dict(),
        list_versions_bytes=size_versions,
        tasks_status_tiny_s=status_tiny.as_dict(),
        tasks_status_tiny_bytes=status_tiny_size,
        tasks_status_big_s=status_big.as_dict(),
        tasks_status_big_bytes=status_big_size,
    )
    return {"name": "agent_latency", "rows": rows_out, "prepare_s": prepare_s, "details": details}


def _ms_line(samples: Samples) -> str:
    return (
        f"median {samples.median * 1000:.1f} ms, p90 {p90(samples.values) * 1000:.1f} ms, "
        f"best {samples.best * 1000:.1f} ms (n={len(samples.values)})"
    )


def _share(median: float, target: float, wapt: float | None, judged: bool) -> str:
    if not judged:
        return "quick run: not judged"
    text = f"{median / target:.0%} of budget"
    if wapt is not None:
        text = f"{wapt / median:.1f}× faster than WAPT; " + text
    return text


def print_result(result: dict[str, Any]) -> None:
    print(common.table(result["rows"]))
    d = result["details"]
    print(f"\ncode measured: {d['code']}")
    before, after = d["load_average_before"], d["load_average_after"]
    print(f"load average (1, 5, 15 min): before {before}, after {after}\n")
    for key in (
        "install_distinct_s",
        "install_distinct_queued_s",
        "install_distinct_work_s",
        "install_forced_s",
        "install_forced_queued_s",
        "install_forced_work_s",
        "install_big_catalog_s",
        "install_big_catalog_work_s",
        "install_big_catalog_forced_s",
        "python_pass_s",
        "python_setuphelpers_s",
        "ping_s",
        "list_latest_s",
        "list_latest_http_s",
        "list_versions_http_s",
        "tasks_status_tiny_s",
        "tasks_status_big_s",
    ):
        s = Samples(d[key]["values"])
        print(
            f"  {key[:-2]:<28} median {s.median * 1000:7.1f} ms  p90 {p90(s.values) * 1000:7.1f} "
            f"ms  best {s.best * 1000:7.1f} ms  worst {s.worst * 1000:7.1f} ms  n={len(s.values)}"
        )
    polls = d["install_distinct_polls"] + d["install_forced_polls"]
    print(f"  tasks_status calls per install: {min(polls)} to {max(polls)}")
    print(
        f"  tasks_status answer (every task): {d['tasks_status_tiny_bytes'] / 1024:,.0f} KiB "
        f"after {d['installs'] * 2} installs (tiny), {d['tasks_status_big_bytes'] / 1024:,.0f} "
        f"KiB with the {d['entries']:,}-package catalog"
    )
    for key in ("tiny_idle", "tiny_after", "big_idle", "big_after", "versions_idle"):
        m = d[key]
        print(
            f"  memory {key:<13} VmRSS {m['VmRSS']:6.1f} MiB  VmHWM {m['VmHWM']:6.1f} MiB  "
            f"RssAnon {m['RssAnon']:6.1f} MiB  RssFile {m['RssFile']:6.1f} MiB  "
            f"threads {m['Threads']:.0f}"
        )
    print(
        f"  ready (start → first update done): tiny {d['tiny_ready_s']:.2f} s, "
        f"{d['entries']:,} packages {d['big_ready_s']:.2f} s, "
        f"{d['entries']:,} versions {d['versions_ready_s']:.2f} s"
    )
    for key in ("tiny_update", "big_update", "versions_update"):
        print(f"  {key}: {d[key]}")
    print(f"  bridge keeps the agent's columns (editor): {d['bridge_columns_intact']}")
    if d["versions_bridge_error"]:
        print(f"  bridge on the index_http shape: {d['versions_bridge_error']}")


# --- where the time goes (--stages) ----------------------------------------------------------

#: (module, owner in it or "", attribute): what the instrumented agent times
STAGES = [
    ("agent_bridge.agent.tasks", "TaskQueue", "add"),
    ("agent_bridge.agent.tasks", "TaskQueue", "_execute"),
    ("agent_bridge.agent.tasks", "TaskQueue", "_persist_locked"),
    ("agent_bridge.agent.tasks", "TaskQueue", "_finish"),
    ("agent_bridge.agent.tasks", "TaskQueue", "tasks_status"),
    ("agent_bridge.agent.state", "DurableJSONStorage", "write"),
    ("agent_bridge.agent.state", "DurableJSONStorage", "read"),
    ("agent_bridge.agent.state", "AgentState", "put_installed"),
    ("agent_bridge.agent.state", "AgentState", "installed"),
    ("agent_bridge.agent.core", "Agent", "may_act"),
    ("agent_bridge.agent.core", "Agent", "_install_requests"),
    ("agent_bridge.agent.core", "Agent", "installed_entries"),
    ("agent_bridge.agent.core", "Agent", "_recompute_pending"),
    ("agent_bridge.agent.core", "Agent", "package_dicts"),
    ("agent_bridge.agent.core", "", "resolve"),
    ("agent_bridge.agent.core", "", "compute_pending"),
    ("agent_bridge.agent.installer", "Installer", "install"),
    ("agent_bridge.agent.installer", "Installer", "_keep_for_uninstall"),
    ("agent_bridge.agent.installer", "", "extract_package"),
    ("agent_bridge.agent.sources", "HttpSource", "fetch"),
    ("agent_bridge.agent.runner", "", "_wait_for_exit"),
    ("agent_bridge.agent.runner", "", "_end_session"),
    ("agent_bridge.agent.service", "", "jsonify"),
]


def instrumented_agent(config_path: Path, out: Path) -> None:
    """Serve the agent as `comptoir agent serve` does, with every function of `STAGES` timed.

    The timings are written to `out` (JSON: name -> list of seconds) on SIGUSR1.
    """
    import importlib
    import logging

    from agent_bridge.agent.config import load_config
    from agent_bridge.agent.core import Agent as AgentCore
    from agent_bridge.agent.service import serve

    timings: dict[str, list[float]] = {}
    lock = threading.Lock()

    def timed(name: str, function: Any) -> Any:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    timings.setdefault(name, []).append(time.perf_counter() - start)

        return wrapper

    for module_name, owner_name, attribute in STAGES:
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        name = f"{owner_name or module_name.rsplit('.', 1)[1]}.{attribute}"
        setattr(owner, attribute, timed(name, getattr(owner, attribute)))

    def dump(*_: Any) -> None:
        with lock:
            out.write_text(json.dumps(timings), "utf-8")

    signal.signal(signal.SIGUSR1, dump)
    config = load_config(config_path)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    agent = AgentCore(config)
    # The installer keeps the runner function it was given: time it on the instance.
    agent.installer.runner = timed("run_setup", agent.installer.runner)
    serve(agent)


def read_timings(agent: Agent) -> dict[str, list[float]]:
    """Ask the instrumented agent for its timings so far."""
    assert agent.timings is not None
    agent.timings.unlink(missing_ok=True)
    agent.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not agent.timings.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # the write is small; let it finish
    return json.loads(agent.timings.read_text("utf-8"))  # type: ignore[no-any-return]


def print_stages(
    title: str, before: dict[str, list[float]], after: dict[str, list[float]], n: int
) -> None:
    print(f"\n{title}\n")
    print("| stage | calls per operation | median ms | ms per operation |")
    print("| --- | ---: | ---: | ---: |")
    for name in sorted(after, key=lambda k: -sum(after[k][len(before.get(k, [])) :])):
        values = after[name][len(before.get(name, [])) :]
        if values:
            print(
                f"| `{name}` | {len(values) / n:.2f} | {statistics.median(values) * 1000:.2f} "
                f"| {sum(values) / n * 1000:.2f} |"
            )


def stages(quick: bool) -> None:
    """Installs on the tiny and the large catalog, then listings, on instrumented agents."""
    installs = 10 if quick else 30
    with site(quick, installs) as (where, _), ExitStack() as stack:
        details: dict[str, Any] = {}
        names = where.noop_names
        for name, repositories in (("tiny", ["noop"]), ("big", ["school", "noop"])):
            agent, client = start_agent(
                stack, where, name, repositories, details, instrumented=True
            )
            session = client.login(ADMIN, PASSWORD)
            before = read_timings(agent)
            first = install_round(client, session, names, force=False)
            forced = install_round(client, session, [names[0]] * installs, force=True)
            after = read_timings(agent)
            print_stages(
                f"{name} catalog: {installs * 2} installs, median {first.total.median * 1000:.1f}"
                f" ms (first) and {forced.total.median * 1000:.1f} ms (forced)",
                before,
                after,
                installs * 2,
            )
            if name == "big":
                before = after
                listing, rows = listing_samples(client, session, 10)
                after = read_timings(agent)
                print_stages(
                    f"{rows:,}-row listing: median {listing.median * 1000:.1f} ms",
                    before,
                    after,
                    11,
                )
            stop_agent(agent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 entries, 10 installs")
    parser.add_argument("--repeat", type=int, help="installs and listings (default 40 and 15)")
    parser.add_argument("--stages", action="store_true", help="time the agent's stages")
    parser.add_argument("--instrumented-agent", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instrumented_agent:
        instrumented_agent(*args.instrumented_agent)
        return
    if args.stages:
        stages(args.quick)
        return
    result = run(args.quick, args.repeat)
    print_result(result)
    common.write_results("agent_latency", {**result, "rows": [r.__dict__ for r in result["rows"]]})


if __name__ == "__main__":
    main()
