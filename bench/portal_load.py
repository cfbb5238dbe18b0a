"""The teacher portal under load (issue 4): catalog page and search fragment, 20 clients, wrk.

Issue 4: "With 5,000 packages in the catalog, measured with a load tool at 20 concurrent clients
against waitress: catalog page p95 under 150 ms, search fragment p95 under 50 ms."

The set-up is the real thing, on 127.0.0.1 only:

- the agent: `comptoir agent serve --config`, started as `agent_latency.py` starts it, on that
  benchmark's signed 5,000-entry index (one version per package name) served over loopback
  HTTP, plus a second repository holding a real self-service rules package. A host package
  (`host_repository`) assigns the rules package to the machine, and the benchmark runs the
  upgrade that installs it. A local accounts file holds an admin, who sees every package, and a
  teacher, whose group the rules grant `TEACHER_GRANTS` of the 5,000 packages;
- the portal: `comptoir portal serve --host 127.0.0.1 --port P --agent-url URL` in a child
  process, default settings (waitress with 8 threads, 10-minute idle timeout, 5-second catalog
  cache, 48 cards per page) but its data directory, under `bench/data/portal-run/`;
- one login per user, as a browser does it: `GET /login` for the anonymous session and its
  CSRF token, then `POST /login` with the token, which answers 303 and a new session cookie.
  The 20 connections share that one session.

Each target is loaded by `wrk -c 20 -t 2 -d 15s --latency --timeout 60s` with a Lua script,
written to a temporary directory. The script sends the session cookie and rotates the paths.
It checks every answer: status 200 and a marker in the body, because wrk itself counts only 4xx
and 5xx as errors, not a redirect to the login page. It prints its own summary from `done()`,
including `latency:percentile(95)`, which wrk's text leaves out. For each user:

1. `GET /`: the whole catalog page (search form, categories, first 48 cards, status box);
2. `GET /catalog/results?q=WORD` with `HX-Request: true`: the fragment that search as you type
   asks for. `WORD` rotates over `SEARCH_WORDS`, whole words and the prefixes typing sends.

Each is then run again with one connection (`-c 1`): the cost of one request, without queueing.
After each run the session must still show the catalog (the idle timeout has not ended it).
References in the same run: a static file (`/static/vendor/htmx/htmx.min.js`: waitress, Flask
and the session lookup, no agent) and `/healthz` (one agent `/ping` per request). The targets
are decided on p95, with no failed answer.

    .venv/bin/python bench/portal_load.py [--quick] [--duration S] [--profile] [--stages]

- `--profile` runs each missed target once more with `py-spy record --gil --nonblocking`
  attached to the portal, keeps the collapsed stacks under `bench/results/`, and prints the
  self time by function and the share of some stages.
- `--stages` runs every target against an instrumented portal instead: the same app and
  waitress settings, started by this script, with timers (wall and thread CPU time) around the
  views, the bridge calls, the catalog, search, status box and template rendering. It prints,
  per target, the calls per request and the CPU milliseconds each stage costs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import agent_latency
import common
import index_http
from common import Row

SCRIPT = Path(__file__).resolve()
RUN_DIR = common.DATA / "portal-run"
CONNECTIONS = 20
WRK_THREADS = 2
FULL_DURATION_S = 15.0
QUICK_DURATION_S = 3.0
PAGE_TARGET_MS = 150.0
SEARCH_TARGET_MS = 50.0
TEACHER, TEACHER_GROUP = "bench-teacher", "profs-bench"
TEACHER_GRANTS = 300
RULES_PACKAGE = "bench-selfservice-rules"
STATIC_PATH = "/static/vendor/htmx/htmx.min.js"
#: what a teacher types: whole words, and the prefixes that search as you type sends on the way
SEARCH_WORDS = [
    "firefox",
    "géo",
    "géométrie",
    "python",
    "pyth",
    "audio",
    "dessin",
    "vidéo",
    "scratch",
    "bureautique",
    "sciences",
    "3d",
    "lyc",
    "lycéens",
    "éditeur",
    "ed",
    "cartes",
    "programmation",
    "tableau blanc",
    "mozilla",
]
#: a substring every good answer holds (a card, or the result count of the fragment)
CARD_MARKER = 'data-package="'
RESULTS_MARKER = 'class="result-count"'
HTMX_MARKER = "htmx"
HEALTH_MARKER = '"reachable":true'
SETTLE_S = 2.0
WRK = shutil.which("wrk") or "/usr/bin/wrk"
PY_SPY = Path(sys.executable).parent / "py-spy"


# --- data ------------------------------------------------------------------------------------


def package_names(count: int) -> list[str]:
    """The package names of `agent_latency.prepare_catalog(distinct=True)`, in its order."""
    return [
        f"{entry.package}-{number:04d}"
        for number, entry in enumerate(common.make_entries(count), start=1)
    ]


def build_rules(root: Path, granted: Sequence[str]) -> tuple[Path, Path]:
    """A repository with the self-service rules package (`TEACHER_GROUP` -> `granted`), and a
    host directory with this machine's host package, which depends on it. Both are signed by
    the fixture's `plain` certificate (no `setup.py`, so no code-signing needed), as the
    portal's tests do."""
    from wapt.control import PackageEntry, format_control
    from wapt.package import build_package
    from wapt.repository import scan_repository

    signer = common.fixture_signer("plain")
    repo, hosts = root / "rules-repo", root / "hosts"
    repo.mkdir(parents=True)
    hosts.mkdir(parents=True)
    rules = root / "src" / RULES_PACKAGE
    (rules / "WAPT" / "persistent").mkdir(parents=True)
    fields = {"architecture": "all", "priority": "optional", "target_os": "all"}
    entry = PackageEntry(
        {"package": RULES_PACKAGE, "version": "1-1", "section": "selfservice", **fields}
    )
    (rules / "WAPT" / "control").write_text(format_control(entry), "utf-8")
    grants = json.dumps({TEACHER_GROUP: list(granted)})
    (rules / "WAPT" / "persistent" / "selfservice.json").write_text(grants, "utf-8")
    build_package(rules, signer, repo)
    scan_repository(repo)
    host = root / "src" / "host"
    (host / "WAPT").mkdir(parents=True)
    entry = PackageEntry(
        {
            "package": agent_latency.HOST_UUID,
            "version": "1",
            "section": "host",
            "depends": RULES_PACKAGE,
            **fields,
        }
    )
    (host / "WAPT" / "control").write_text(format_control(entry), "utf-8")
    build_package(host, signer, hosts)
    return repo, hosts


def write_accounts(path: Path) -> None:
    """The admin of `agent_latency` and a teacher, with the same throwaway password."""
    from agent_bridge.agent.auth import write_accounts_file

    password = agent_latency.PASSWORD
    write_accounts_file(
        path,
        {
            agent_latency.ADMIN: (password, agent_latency.ADMIN, [agent_latency.ADMIN_GROUP]),
            TEACHER: (password, TEACHER, [TEACHER_GROUP]),
        },
    )


@dataclass
class Site:
    root: Path
    count: int
    agent: agent_latency.Agent
    client: Any  # AgentClient
    granted: int
    listings: dict[str, int]  # user -> packages the bridge lists for them
    details: dict[str, Any] = field(default_factory=dict)


@contextmanager
def site(quick: bool) -> Iterator[tuple[Site, float]]:
    """The data, the repositories on loopback and the agent, rules installed; yield the site
    and the time its preparation took (data, agent start-up and upgrade)."""
    from agent_bridge.client import AgentClient

    start = time.perf_counter()
    count = agent_latency.QUICK_COUNT if quick else agent_latency.FULL_COUNT
    catalog_dir = agent_latency.prepare_catalog(quick, distinct=True)
    root = common.fresh_directory(RUN_DIR)
    names = package_names(count)
    granted = sorted(random.Random(20261121).sample(names, min(TEACHER_GRANTS, count)))
    rules_repo, hosts = build_rules(root, granted)
    accounts = root / "accounts.toml"
    write_accounts(accounts)
    with ExitStack() as stack:
        urls = {
            "school": stack.enter_context(index_http.serve(catalog_dir)),
            "rules": stack.enter_context(index_http.serve(rules_repo)),
        }
        agent_root = root / "agent"
        agent_root.mkdir()
        config, port = agent_latency.write_config(agent_root, urls, accounts)
        # a top-level key, so before the first [table]
        text = config.read_text("utf-8")
        config.write_text(f'host_repository = "{hosts}"\n{text}', "utf-8")
        agent = stack.enter_context(
            agent_latency.agent_process(config, port, agent_root / "agent.log")
        )
        client = AgentClient(agent.url, connect_retries=30.0, timeout=60.0)
        client.ping()
        update = agent_latency.wait_first_update(client)
        for task in client.upgrade():
            done = client.wait_for_task(task.id, timeout=60)
            if done.state != "done":
                raise RuntimeError(f"installing the rules failed: {done.logs}")
        listings = {
            user: len(client.packages(client.login(user, agent_latency.PASSWORD), latest=True))
            for user in (agent_latency.ADMIN, TEACHER)
        }
        if listings[agent_latency.ADMIN] < count or listings[TEACHER] != len(granted):
            raise RuntimeError(f"unexpected listings {listings} ({len(granted)} granted)")
        where = Site(root, count, agent, client, len(granted), listings)
        where.details["agent_update"] = {
            k: update.result.get(k) for k in ("count", "discarded_count", "errors")
        }
        yield where, time.perf_counter() - start


# --- the portal ------------------------------------------------------------------------------


@dataclass
class Portal:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    timings: Path | None = None  # the instrumented portal's timing file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def portal_process(root: Path, agent_url: str, *, timings: Path | None = None) -> Iterator[Portal]:
    """`comptoir portal serve` on a free loopback port, default settings but the data directory
    (its generated secret key); stopped with SIGTERM (SIGKILL after 10 s) on the way out.

    With `timings`, this script's instrumented portal instead (`instrumented_portal`), which
    writes its stage timings there on SIGUSR1."""
    port = agent_latency.free_port()
    data_dir = root / "portal-data"
    log = root / "portal.log"
    if timings is None:
        argv = [str(Path(sys.executable).parent / "comptoir"), "portal", "serve"]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--agent-url", agent_url]
    else:
        argv = [sys.executable, str(SCRIPT), "--instrumented-portal", str(port), agent_url]
        argv += [str(timings)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
    env["COMPTOIR_PORTAL_DATA_DIR"] = str(data_dir)
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    portal = Portal(process, port, log, timings)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, _ = request(port, "GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the portal did not start: {log.read_text('utf-8')[-2000:]}")
            time.sleep(0.05)
        yield portal
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def request(
    port: int,
    method: str,
    target: str,
    *,
    cookie: str | None = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, str]:
    """One request with `http.client` on a new connection: status, headers, body text."""
    sent = dict(headers or {})
    body = None
    if cookie:
        sent["Cookie"] = cookie
    if form is not None:
        body = urllib.parse.urlencode(form)
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, target, body=body, headers=sent)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        return response.status, response.headers, text
    finally:
        connection.close()


def _session_cookie(headers: http.client.HTTPMessage) -> str:
    """`name=value` of the cookie the answer sets."""
    for value in headers.get_all("Set-Cookie") or []:
        pair = value.split(";", 1)[0].strip()
        if pair and "=" in pair and pair.split("=", 1)[1]:
            return pair
    raise RuntimeError("the portal set no session cookie")


def login(port: int, user: str) -> str:
    """Sign `user` in as a browser does; the session cookie (`name=value`)."""
    status, headers, page = request(port, "GET", "/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if status != 200 or not found:
        raise RuntimeError(f"GET /login answered {status} without a CSRF token")
    anonymous = _session_cookie(headers)
    form = {"username": user, "password": agent_latency.PASSWORD, "csrf_token": found.group(1)}
    status, headers, _ = request(port, "POST", "/login", cookie=anonymous, form=form)
    if status != 303:
        raise RuntimeError(f"POST /login as {user} answered {status}")
    cookie = _session_cookie(headers)
    if cookie == anonymous:
        raise RuntimeError("the session id did not change at sign-in")
    return cookie


def check_page(port: int, cookie: str, path: str, marker: str, htmx: bool = False) -> str:
    """GET `path` once; it must answer 200 with `marker` (not a redirect to the login page)."""
    headers = {"HX-Request": "true"} if htmx else {}
    status, _, text = request(port, "GET", path, cookie=cookie, headers=headers)
    if status != 200 or marker not in text:
        raise RuntimeError(f"{path} answered {status} without {marker!r}: {text[:300]}")
    return text


def result_count(text: str) -> int:
    found = re.search(r'class="result-count">\s*([\d\s\u202f\xa0,.]+)', text)
    if not found:
        raise RuntimeError("no result count in the fragment")
    return int(re.sub(r"\D", "", found.group(1)))


def search_path(word: str) -> str:
    return "/catalog/results?" + urllib.parse.urlencode({"q": word})


def portal_code() -> str:
    """A digest of what the portal runs on top of `agent_latency.agent_code()`: `portal/`,
    `templates/` and `static/`."""
    import hashlib

    digest = hashlib.sha256()
    for pattern in ("portal/**/*.py", "templates/**/*.html", "static/**/*"):
        for path in sorted(common.ROOT.glob(pattern)):
            if path.is_file():
                digest.update(str(path.relative_to(common.ROOT)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# --- wrk -------------------------------------------------------------------------------------

LUA = r"""
-- written by bench/portal_load.py
local paths = {PATHS}
local headers = {HEADERS}
local marker = {MARKER}

local threads = {}
counter = 0
statuses = {}
bad = 0
bytes_min = -1
bytes_max = 0

function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = offset or 0
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1], headers)
end

function response(status, hdrs, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= 200 or (marker ~= "" and not string.find(body, marker, 1, true)) then
    bad = bad + 1
  end
  local size = #body
  if bytes_min < 0 or size < bytes_min then bytes_min = size end
  if size > bytes_max then bytes_max = size end
end

function done(summary, latency, requests)
  local all, wrong, smin, smax = {}, 0, -1, 0
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do all[code] = (all[code] or 0) + n end
    wrong = wrong + t:get("bad")
    local tmin, tmax = t:get("bytes_min"), t:get("bytes_max")
    if tmin >= 0 and (smin < 0 or tmin < smin) then smin = tmin end
    if tmax > smax then smax = tmax end
  end
  local codes = {}
  for code, n in pairs(all) do table.insert(codes, string.format('"%d": %d', code, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"bad": %d, "statuses": {%s}, "body_min": %d, "body_max": %d, ' ..
    '"min_us": %d, "mean_us": %.1f, "stdev_us": %.1f, "max_us": %d, ' ..
    '"p50_us": %d, "p75_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, "p999_us": %d}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    wrong, table.concat(codes, ", "), smin, smax,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency:percentile(99.9)))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII is a valid Lua string literal


def lua_script(paths: Sequence[str], headers: dict[str, str], marker: str) -> str:
    table = ", ".join(_lua_string(p) for p in paths)
    pairs = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    return (
        LUA.replace("{PATHS}", "{" + table + "}")
        .replace("{HEADERS}", "{" + pairs + "}")
        .replace("{MARKER}", _lua_string(marker))
    )


@dataclass
class Load:
    """One wrk run: its summary (from the script's `done()`) and wrk's own text."""

    label: str
    paths: list[str]
    summary: dict[str, Any]
    text: str
    wall_s: float

    @property
    def rps(self) -> float:
        return float(self.summary["requests"]) / (self.summary["duration_us"] / 1e6)

    def ms(self, key: str) -> float:
        return float(self.summary[f"{key}_us"]) / 1000

    @property
    def failures(self) -> int:
        """Answers that were not a good 200, and socket errors and timeouts."""
        errors = self.summary["errors"]
        return int(self.summary["bad"]) + sum(
            errors[k] for k in ("connect", "read", "write", "timeout")
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "paths": self.paths,
            "summary": self.summary,
            "rps": self.rps,
            "wall_s": self.wall_s,
            "wrk_text": self.text,
        }


def run_wrk(
    label: str,
    port: int,
    paths: Sequence[str],
    *,
    cookie: str | None,
    marker: str,
    duration: float,
    htmx: bool = False,
    connections: int = CONNECTIONS,
) -> Load:
    """`wrk -c 20 -t 2 -d DURATION --latency -s SCRIPT` on the portal, rotating `paths`
    (with `connections` 1: `-c 1 -t 1`, one request at a time)."""
    headers = {"Cookie": cookie} if cookie else {}
    if htmx:
        headers["HX-Request"] = "true"
    with tempfile.TemporaryDirectory(prefix="portal-load-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(lua_script(paths, headers, marker), "utf-8")
        threads = min(WRK_THREADS, connections)
        argv = [WRK, "-c", str(connections), "-t", str(threads), "-d", f"{duration:g}s"]
        argv += ["--latency", "--timeout", "60s", "-s", str(script), f"http://127.0.0.1:{port}"]
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
        wall = time.perf_counter() - began
    # wrk closes its connections at the deadline, but waitress still serves what it had
    # queued: let it drain, so that the next run starts on an idle portal
    time.sleep(SETTLE_S)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr}")
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK-JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {done.stdout}\n{done.stderr}")
    summary = json.loads(line.removeprefix("WRK-JSON "))
    text = "\n".join(x for x in done.stdout.splitlines() if not x.startswith("WRK-JSON "))
    return Load(label, list(paths), summary, text, wall)


# --- py-spy ----------------------------------------------------------------------------------


def profile_load(
    portal: Portal, out: Path, seconds: float, drive: Any
) -> tuple[Load, dict[str, float], int]:
    """Run `drive()` (a wrk run) while py-spy samples the thread holding the GIL in the portal;
    return the run, the samples by collapsed stack, and their total."""
    argv = [str(PY_SPY), "record", "--pid", str(portal.process.pid), "--gil", "--nonblocking"]
    argv += ["--rate", "250", "--format", "raw", "-o", str(out), "-d", f"{int(seconds) + 2}"]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach
    try:
        load = drive()
    finally:
        try:
            _, err = spy.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode()[-2000:]}")
    stacks: dict[str, float] = {}
    for line in out.read_text("utf-8").splitlines():
        stack, _, number = line.rpartition(" ")
        if stack and number.isdigit():
            stacks[stack] = stacks.get(stack, 0) + int(number)
    return load, stacks, int(sum(stacks.values()))


def _frame(text: str) -> str:
    """`function (path/to/module.py:LINE)` -> `function (module.py)`."""
    name, _, where = text.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


#: stages reported by inclusive share: (label, substrings of collapsed stack frames, any of)
PROFILE_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("the whole request in Flask (`Flask.wsgi_app`)", ("wsgi_app (flask/app.py",)),
    ("`catalog.index` (the page view)", ("index (portal/catalog.py",)),
    ("`catalog.results` (the fragment view)", ("results (portal/catalog.py",)),
    ("`UserBoard.catalog`: fetch + build when the 5 s cache is stale", ("catalog (portal/board",)),
    ("  `AgentClient.packages` (the bridge: HTTP + JSON + models)", ("packages (agent_bridge/",)),
    ("  `Catalog.build` (sort + fold the search text)", ("build (portal/board.py",)),
    ("`Catalog.search`", ("search (portal/board.py",)),
    ("`UserBoard.cards`", ("cards (portal/board.py",)),
    ("`TaskBoard.tasks` (the agent's `/tasks.json`)", ("tasks (portal/board.py",)),
    ("`UserBoard.status`", ("status (portal/board.py",)),
    ("template rendering (`render_template`)", ("render_template (flask/templating.py",)),
    ("  of which `_()`/`ngettext` (Flask-Babel)", ("_gettext_alias", "_make_new_", "flask_babel")),
    ("  of which template lookups (`{% include %}`)", ("get_template (", "LRUCache.__getitem__")),
    ("  of which `{% import … with context %}`", ("make_module", "TemplateModule.__init__")),
    ("  of which escaping (`markupsafe`)", ("markupsafe",)),
    ("  of which `url_for`", ("url_for (",)),
    ("session open/save", ("_session (portal/sessions.py",)),
]
OUTSIDE_APP = "outside `Flask.wsgi_app`: waitress (accept, parse, write, its main loop)"


def profile_report(stacks: dict[str, float], total: int) -> dict[str, Any]:
    """Self time by function and the inclusive share of `PROFILE_STAGES`, from collapsed
    stacks."""
    own: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    for stack, n in stacks.items():
        frames = stack.split(";")
        own[_frame(frames[-1])] += n
        for label, needles in PROFILE_STAGES:
            if any(needle in f for f in frames for needle in needles):
                stages[label] += n
        if not any(PROFILE_STAGES[0][1][0] in f for f in frames):
            stages[OUTSIDE_APP] += n
    labels = [label for label, _ in PROFILE_STAGES] + [OUTSIDE_APP]
    return {
        "samples": total,
        "self": [(name, n / total) for name, n in own.most_common(25)],
        "stages": [(label, stages[label] / total) for label in labels],
    }


def print_profile(title: str, load: Load, report: dict[str, Any]) -> None:
    print(
        f"\n{title}: p95 {load.ms('p95'):.1f} ms, {load.rps:.0f} req/s under py-spy "
        f"({report['samples']} samples of the thread holding the GIL)\n"
    )
    print("| stage (inclusive) | share of GIL samples |")
    print("| --- | ---: |")
    for label, share in report["stages"]:
        print(f"| {label} | {share:.1%} |")
    print("\n| function (self) | share |")
    print("| --- | ---: |")
    for name, share in report["self"]:
        print(f"| `{name}` | {share:.1%} |")


# --- where the time goes (--stages) ----------------------------------------------------------

#: (module, owner in it or "", attribute): what the instrumented portal times
PORTAL_STAGES = [
    ("agent_bridge.client", "AgentClient", "packages"),
    ("agent_bridge.client", "AgentClient", "tasks"),
    ("portal.board", "TaskBoard", "tasks"),
    ("portal.board", "UserBoard", "catalog"),
    ("portal.board", "Catalog", "build"),
    ("portal.board", "Catalog", "search"),
    ("portal.board", "UserBoard", "cards"),
    ("portal.board", "UserBoard", "status"),
    ("portal.render", "", "render_template"),
    ("portal.sessions", "ServerSessionInterface", "open_session"),
    ("portal.sessions", "ServerSessionInterface", "save_session"),
]


def instrumented_portal(port: int, agent_url: str, out: Path) -> None:
    """Serve the portal as `comptoir portal serve` does (same settings, waitress, threads),
    with the functions of `PORTAL_STAGES`, the views and `Flask.wsgi_app` timed: wall time
    (`perf_counter`) and the calling thread's CPU time (`thread_time`, which leaves out the
    time spent waiting for the GIL). The timings go to `out` (JSON: name -> [[wall, cpu], …])
    on SIGUSR1."""
    import functools
    import importlib
    import inspect
    import logging
    import threading

    from waitress import serve

    from portal import create_app
    from portal.settings import load_settings

    timings: dict[str, list[tuple[float, float]]] = {}
    lock = threading.Lock()

    def timed(name: str, function: Any) -> Any:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                sample = (time.perf_counter() - wall, time.thread_time() - cpu)
                with lock:
                    timings.setdefault(name, []).append(sample)

        return wrapper

    for module_name, owner_name, attribute in PORTAL_STAGES:
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        name = f"{owner_name or module_name.rsplit('.', 1)[1]}.{attribute}"
        static = inspect.getattr_static(owner, attribute)
        if isinstance(static, classmethod):
            setattr(owner, attribute, classmethod(timed(name, static.__func__)))
        else:
            setattr(owner, attribute, timed(name, getattr(owner, attribute)))

    def dump(*_: Any) -> None:
        with lock:
            out.write_text(json.dumps(timings), "utf-8")

    signal.signal(signal.SIGUSR1, dump)
    settings = load_settings(
        None, overrides={"listen_host": "127.0.0.1", "port": port, "agent_url": agent_url}
    )
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    for endpoint in ("catalog.index", "catalog.results", "static"):
        app.view_functions[endpoint] = timed(f"view {endpoint}", app.view_functions[endpoint])
    app.wsgi_app = timed("Flask.wsgi_app", app.wsgi_app)  # type: ignore[method-assign]
    serve(app, host="127.0.0.1", port=port, threads=settings.threads, ident="comptoir-portal")


def read_timings(portal: Portal) -> dict[str, list[list[float]]]:
    """Ask the instrumented portal for its timings so far."""
    assert portal.timings is not None
    portal.timings.unlink(missing_ok=True)
    portal.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not portal.timings.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # let the write finish
    return json.loads(portal.timings.read_text("utf-8"))  # type: ignore[no-any-return]


def stage_table(
    before: dict[str, list[list[float]]], after: dict[str, list[list[float]]], seconds: float
) -> dict[str, Any]:
    """Per stage, over the requests between `before` and `after`: calls per request, median
    wall and CPU ms per call, and CPU ms per request."""
    new = {name: values[len(before.get(name, [])) :] for name, values in after.items()}
    requests = len(new.get("Flask.wsgi_app", [])) or 1
    rows = []
    for name, values in sorted(new.items(), key=lambda kv: -sum(v[1] for v in kv[1])):
        if not values:
            continue
        rows.append(
            {
                "stage": name,
                "calls": len(values),
                "per_request": len(values) / requests,
                "wall_ms": statistics.median(v[0] for v in values) * 1000,
                "wall_max_ms": max(v[0] for v in values) * 1000,
                "cpu_ms": statistics.median(v[1] for v in values) * 1000,
                "cpu_per_request_ms": sum(v[1] for v in values) / requests * 1000,
            }
        )
    cpu = sum(v[1] for v in new.get("Flask.wsgi_app", []))
    return {"requests": requests, "seconds": seconds, "app_cpu_share": cpu / seconds, "rows": rows}


def print_stages(title: str, load: Load, table: dict[str, Any]) -> None:
    print(
        f"\n{title}: p95 {load.ms('p95'):.1f} ms, {load.rps:,.0f} req/s, "
        f"{table['requests']:,} requests; the app's threads used "
        f"{table['app_cpu_share']:.0%} of one core\n"
    )
    print(
        "| stage | calls per request | median wall ms | max wall ms | median CPU ms "
        "| CPU ms per request |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in table["rows"]:
        print(
            f"| `{r['stage']}` | {r['per_request']:.3f} | {r['wall_ms']:.2f} "
            f"| {r['wall_max_ms']:.0f} | {r['cpu_ms']:.2f} | {r['cpu_per_request_ms']:.2f} |"
        )


def stages(quick: bool, duration: float | None) -> dict[str, Any]:
    """Every target once more against the instrumented portal, with its stage table."""
    duration = duration or (QUICK_DURATION_S if quick else FULL_DURATION_S)
    tables: dict[str, Any] = {}
    with site(quick) as (where, _), ExitStack() as stack:
        timings = where.root / "portal-timings.json"
        portal = stack.enter_context(portal_process(where.root, where.agent.url, timings=timings))
        for user in (agent_latency.ADMIN, TEACHER):
            cookie = login(portal.port, user)
            check_page(portal.port, cookie, "/", CARD_MARKER)
            plan = targets(user)
            if user == agent_latency.ADMIN:
                plan.insert(
                    0, Target("static", STATIC_PATH, [STATIC_PATH], HTMX_MARKER, False, None)
                )
            for target in plan:
                before = read_timings(portal)
                load = run_wrk(
                    target.label,
                    portal.port,
                    target.paths,
                    cookie=cookie,
                    marker=target.marker,
                    duration=duration,
                    htmx=target.htmx,
                )
                table = stage_table(before, read_timings(portal), load.summary["duration_us"] / 1e6)
                tables[target.key] = {"load": load.as_dict(), **table}
                print_stages(target.label, load, table)
    common.write_results("portal_load-stages", tables)
    return tables


# --- the measurements ------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    label: str
    paths: list[str]
    marker: str
    htmx: bool
    target_ms: float | None


def targets(user: str) -> list[Target]:
    short = "admin" if user == agent_latency.ADMIN else "teacher"
    return [
        Target(
            f"{short}_page", f"{short}: catalog page `/`", ["/"], CARD_MARKER, False, PAGE_TARGET_MS
        ),
        Target(
            f"{short}_search",
            f"{short}: search fragment `/catalog/results?q=…` (htmx)",
            [search_path(word) for word in SEARCH_WORDS],
            RESULTS_MARKER,
            True,
            SEARCH_TARGET_MS,
        ),
    ]


def measure_user(
    portal: Portal, user: str, duration: float, details: dict[str, Any]
) -> tuple[str, list[tuple[Target, Load, Load]]]:
    """Sign `user` in once, check the pages, then load each of their targets with wrk: 20
    connections, then one (the cost of a request without queueing)."""
    cookie = login(portal.port, user)
    page = check_page(portal.port, cookie, "/", CARD_MARKER)
    short = "admin" if user == agent_latency.ADMIN else "teacher"
    counts = {}
    for word in SEARCH_WORDS:
        text = check_page(portal.port, cookie, search_path(word), RESULTS_MARKER, htmx=True)
        counts[word] = result_count(text)
    details[f"{short}_page_cards"] = page.count(CARD_MARKER)
    details[f"{short}_page_bytes"] = len(page.encode())
    details[f"{short}_search_matches"] = counts
    results = []
    for target in targets(user):
        load = run_wrk(
            target.label,
            portal.port,
            target.paths,
            cookie=cookie,
            marker=target.marker,
            duration=duration,
            htmx=target.htmx,
        )
        # still signed in: the requests kept the session alive (idle timeout 600 s)
        check_page(portal.port, cookie, "/", CARD_MARKER)
        alone = run_wrk(
            target.label + ", one client",
            portal.port,
            target.paths,
            cookie=cookie,
            marker=target.marker,
            duration=max(3.0, duration / 3),
            htmx=target.htmx,
            connections=1,
        )
        results.append((target, load, alone))
    return cookie, results


def _ms_line(load: Load) -> str:
    return (
        f"p95 **{load.ms('p95'):.1f} ms** (p50 {load.ms('p50'):.1f}, p90 {load.ms('p90'):.1f}, "
        f"p99 {load.ms('p99'):.1f}, max {load.ms('max'):.0f}); {load.rps:,.0f} req/s; "
        f"{load.summary['requests']:,} requests, {load.failures} failed"
    )


def run(
    quick: bool = False, duration: float | None = None, profile: bool = False
) -> dict[str, Any]:
    from portal.settings import PortalSettings

    duration = duration or (QUICK_DURATION_S if quick else FULL_DURATION_S)
    judged = not quick
    details: dict[str, Any] = {
        "duration_s": duration,
        "connections": CONNECTIONS,
        "wrk_threads": WRK_THREADS,
        "wrk": subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout.splitlines()[0],
        "search_words": SEARCH_WORDS,
        "code": {**agent_latency.agent_code(), "portal": portal_code()},
        "load_average_before": os.getloadavg(),
    }
    defaults = PortalSettings(data_dir=RUN_DIR)
    details["portal_settings"] = {
        "threads": defaults.threads,
        "idle_timeout": defaults.idle_timeout,
        "catalog_cache_seconds": defaults.catalog_cache_seconds,
        "page_size": defaults.page_size,
    }
    loads: dict[str, tuple[Target, Load]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    singles: dict[str, Load] = {}
    with site(quick) as (where, prepare_s), ExitStack() as stack:
        details.update(where.details)
        details["entries"] = where.count
        details["listings"] = where.listings
        portal = stack.enter_context(portal_process(where.root, where.agent.url))
        details["portal_threads_at_start"] = agent_latency.proc_memory(portal.process.pid)[
            "Threads"
        ]
        # references: the floor of waitress + Flask + the session, and a request that asks
        # the agent
        cookie = login(portal.port, agent_latency.ADMIN)
        for key, path, marker in (
            ("static", STATIC_PATH, HTMX_MARKER),
            ("healthz", "/healthz", HEALTH_MARKER),
        ):
            target = Target(key, path, [path], marker, False, None)
            check_page(portal.port, cookie, path, marker)
            load = run_wrk(
                key, portal.port, [path], cookie=cookie, marker=marker, duration=duration
            )
            loads[key] = (target, load)
        cookies = {}
        for user in (agent_latency.ADMIN, TEACHER):
            cookies[user], results = measure_user(portal, user, duration, details)
            for target, load, alone in results:
                loads[target.key] = (target, load)
                singles[target.key] = alone
        details["portal_after"] = agent_latency.proc_memory(portal.process.pid)
        details["agent_after"] = agent_latency.proc_memory(where.agent.process.pid)
        if profile:
            for key, (target, load) in list(loads.items()):
                if target.target_ms is None or load.ms("p95") < target.target_ms:
                    continue
                user = agent_latency.ADMIN if key.startswith("admin") else TEACHER
                raw = common.RESULTS / f"portal_load-{key}.pyspy.txt"
                common.RESULTS.mkdir(parents=True, exist_ok=True)
                profiled, stacks, total = profile_load(
                    portal,
                    raw,
                    duration,
                    lambda t=target, u=user: run_wrk(
                        t.label,
                        portal.port,
                        t.paths,
                        cookie=cookies[u],
                        marker=t.marker,
                        duration=duration,
                        htmx=t.htmx,
                    ),
                )
                profiles[key] = {"load": profiled.as_dict(), **profile_report(stacks, total)}
                profiles[key]["raw"] = str(raw)
                print_profile(target.label, profiled, profiles[key])
    details["load_average_after"] = os.getloadavg()
    if {**agent_latency.agent_code(), "portal": portal_code()} != details["code"]:
        print("WARNING: the code changed while this benchmark ran", file=sys.stderr)
        details["code"]["changed_during_run"] = "yes"

    static, healthz = loads["static"][1], loads["healthz"][1]
    floor = f"static file: p95 {static.ms('p95'):.1f} ms, {static.rps:,.0f} req/s"
    rows_out = []
    for key, (target, load) in loads.items():
        if target.target_ms is None:
            continue
        user = "admin" if key.startswith("admin") else "teacher"
        seen = where.listings[agent_latency.ADMIN if user == "admin" else TEACHER]
        label = f"{target.label} ({seen:,} packages visible)"
        ok = load.ms("p95") < target.target_ms and load.failures == 0
        rows_out.append(
            Row(
                label,
                f"p95 < {target.target_ms:.0f} ms",
                _ms_line(load),
                floor,
                f"{load.ms('p95') / target.target_ms:.0%} of budget"
                if judged
                else "quick run: not judged",
                ok if judged else None,
            )
        )
    rows_out.append(
        Row(
            "same four, one client at a time (`wrk -c 1`): the cost of one request",
            "(informative)",
            "; ".join(
                f"{key.replace('_', ' ')}: p50 {alone.ms('p50'):.1f} ms, p95 "
                f"{alone.ms('p95'):.1f} ms, max {alone.ms('max'):.0f} ms, "
                f"{alone.rps:,.0f} req/s, {alone.failures} failed"
                for key, alone in singles.items()
            ),
            f"{max(3.0, duration / 3):g} s each",
            "",
            None,
        )
    )
    rows_out.append(
        Row(
            "references: static file (`htmx.min.js`) and `/healthz` (one agent `/ping` each)",
            "(informative)",
            f"static: {_ms_line(static)}; healthz: {_ms_line(healthz)}",
            f"{CONNECTIONS} connections, {duration:g} s each, waitress {defaults.threads} threads",
            "",
            None,
        )
    )
    details["loads"] = {key: load.as_dict() for key, (_, load) in loads.items()}
    details["loads"].update({f"{key}_1": load.as_dict() for key, load in singles.items()})
    details["profiles"] = profiles
    return {"name": "portal_load", "rows": rows_out, "prepare_s": prepare_s, "details": details}


def print_result(result: dict[str, Any]) -> None:
    print(common.table(result["rows"]))
    d = result["details"]
    print(f"\ncode measured: {d['code']}; {d['wrk']}")
    print(
        f"load average (1, 5, 15 min): before {d['load_average_before']}, "
        f"after {d['load_average_after']}"
    )
    s = d["portal_settings"]
    print(
        f"portal: waitress {s['threads']} threads ({d['portal_threads_at_start']:.0f} in the "
        f"process), idle timeout {s['idle_timeout']:.0f} s, catalog cache "
        f"{s['catalog_cache_seconds']:g} s, {s['page_size']} cards per page"
    )
    print(f"agent: first update {d['agent_update']}; bridge listings {d['listings']}")
    for short in ("admin", "teacher"):
        matches = d[f"{short}_search_matches"]
        print(
            f"{short}: page {d[f'{short}_page_bytes'] / 1024:,.0f} KiB with "
            f"{d[f'{short}_page_cards']} cards; search matches "
            + ", ".join(f"{w!r} {n}" for w, n in matches.items())
        )
    print()
    for key, load in d["loads"].items():
        sm = load["summary"]
        print(
            f"  {key:<15} p50 {sm['p50_us'] / 1000:7.1f}  p75 {sm['p75_us'] / 1000:7.1f}  "
            f"p90 {sm['p90_us'] / 1000:7.1f}  p95 {sm['p95_us'] / 1000:7.1f}  "
            f"p99 {sm['p99_us'] / 1000:7.1f}  max {sm['max_us'] / 1000:7.1f} ms  "
            f"{load['rps']:7.1f} req/s  n={sm['requests']}  statuses {sm['statuses']}  "
            f"bad {sm['bad']}  errors {sm['errors']}  body {sm['body_min']}-{sm['body_max']} B"
        )
    for key in ("portal_after", "agent_after"):
        m = d[key]
        print(
            f"  memory {key:<13} VmRSS {m['VmRSS']:6.1f} MiB  VmHWM {m['VmHWM']:6.1f} MiB  "
            f"threads {m['Threads']:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 entries, 3 s per wrk run")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 15)")
    parser.add_argument(
        "--profile", action="store_true", help="profile each missed target with py-spy"
    )
    parser.add_argument("--stages", action="store_true", help="time the portal's stages")
    parser.add_argument("--instrumented-portal", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instrumented_portal:
        port, agent_url, out = args.instrumented_portal
        instrumented_portal(int(port), agent_url, Path(out))
        return
    if args.stages:
        stages(args.quick, args.duration)
        return
    result = run(args.quick, args.duration, args.profile)
    print_result(result)
    common.write_results("portal_load", {**result, "rows": [r.__dict__ for r in result["rows"]]})


if __name__ == "__main__":
    main()
