"""The agent's reports to its site server, over the network and on USB sticks.

`HostReporter` owns the host key (Ed25519, made once in `data_dir/private/host_key`, mode
0600, never logged), builds `agent_bridge.reports.HostReport`s from the agent's state, its
pending work and its task history, and delivers them:

- to the site server named in `[site]`: it registers once (`POST {url}/api/v1/hosts/register`
  with the enrolment proof), then reports (`POST {url}/api/v1/hosts/<uuid>/report`) after every
  update, install, removal or upgrade task and every `report_period_minutes`. Failures are
  retried with a doubling delay (from `retry_seconds` up to the period). All of it runs in one
  background thread: an install never waits for the site.
- onto every USB bundle the agent uses as a source (`<bundle>/reports/<uuid>.json`, written
  atomically) after each install, removal or upgrade, so that a technician brings the state of
  an offline site back (`comptoir bundle collect`).

Its state lives in the agent's state file (param `site_report`): the last `seq` used (reports
are numbered so the site refuses a replay), whether the key is registered, and the ids of the
tasks whose events the site acknowledged with the task history (`acked_epoch`) they belong to
(events are the teachers' and the shutdown run's actions; the site also drops an event it
already has, by epoch and id). A report carries the task queue's `epoch`: when the task file
is lost its ids start again at 1 in a new epoch, and neither side takes them for old ones.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from agent_bridge.agent.bundle_source import BundleSource, DetectedBundles
from agent_bridge.agent.state import InstalledRecord
from agent_bridge.agent.tasks import AgentTask
from agent_bridge.reports import (
    MAX_EVENTS,
    MAX_FAILED,
    FailedPackage,
    HostReport,
    InstalledPackage,
    PendingWork,
    ReportError,
    ReportEvent,
    enrolment_secret,
    host_key_from_seed,
    make_registration,
    sign_report,
    tail,
    utc_now_text,
)
from wapt.bundle import METADATA_DIR, REPORTS_DIR
from wapt.fsutil import SecretFileError, load_or_create_secret, write_atomic

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent_bridge.agent.core import Agent

__all__ = ["EVENT_TASKS", "STATE_PARAM", "HostReporter", "SiteAnswer"]

log = logging.getLogger("comptoir.agent.reporting")

STATE_PARAM: Final = "site_report"
#: task kinds a person asks for, whose outcome the site audits (with the action's name)
EVENT_TASKS: Final = {
    "WaptPackageInstall": "install",
    "WaptPackageRemove": "remove",
    "WaptUpgrade": "upgrade",
}
#: who asks for the agent's own tasks: not a person
MACHINE_USERS: Final = frozenset({"", "TASK MANAGER"})
#: tasks after which a report is sent; the second set also writes reports onto sticks
REPORT_AFTER: Final = frozenset(
    {"WaptUpdate", "WaptPackageInstall", "WaptPackageRemove", "WaptUpgrade"}
)
BUNDLE_AFTER: Final = frozenset({"WaptPackageInstall", "WaptPackageRemove", "WaptUpgrade"})
ACKED_KEPT: Final = 1000
TASK_END_WAIT_S: Final = 10.0


@dataclass(frozen=True)
class SiteAnswer:
    """What the site answered: HTTP status and its JSON body (empty when there was none)."""

    status: int
    body: dict[str, Any]

    @property
    def error(self) -> str:
        return str(self.body.get("error", ""))


class HostReporter:
    """Reports of one agent (see the module's docstring); `start` runs its thread."""

    def __init__(self, agent: Agent, *, agent_version: str) -> None:
        self.agent = agent
        self.config = agent.config
        self.site = agent.config.site
        self.agent_version = agent_version
        self._key: Ed25519PrivateKey | None = None
        self._lock = threading.RLock()  # seq, the state param and the key
        self._cond = threading.Condition()
        self._ended: list[tuple[int, str]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.failures = 0
        self.last_error: str | None = None

    # -- the key and the state ---------------------------------------------------------------

    @property
    def key(self) -> Ed25519PrivateKey:
        """The host key, made on first use. Raises `SecretFileError` if it cannot be kept."""
        with self._lock:
            if self._key is None:
                seed = load_or_create_secret(self.config.host_key_file, size=32, what="host key")
                self._key = host_key_from_seed(seed)
            return self._key

    @property
    def host_uuid(self) -> str:
        return self.agent.host_uuid.lower()

    def _state(self) -> dict[str, Any]:
        value = self.agent.state.get_param(STATE_PARAM, {})
        return value if isinstance(value, dict) else {}

    def _save(self, **changes: Any) -> None:
        with self._lock:
            self.agent.state.set_param(STATE_PARAM, {**self._state(), **changes})

    # -- building ----------------------------------------------------------------------------

    def build_report(self) -> HostReport:
        """This machine's report now, with the next `seq` (kept in the state before use)."""
        with self._lock:
            state = self._state()
            seq = int(state.get("seq", 0)) + 1
            self._save(seq=seq)
            epoch = self.agent.queue.epoch
            same_history = state.get("acked_epoch", "") == epoch
            acked = set(state.get("acked_tasks", [])) if same_history else set()
        records = self.agent.state.installed()
        pending = self.agent.pending()
        return HostReport(
            host_uuid=self.host_uuid,
            seq=seq,
            created=utc_now_text(),
            computer_name=socket.gethostname(),
            os=f"{platform.system()} {platform.release()}".strip(),
            agent_version=self.agent_version,
            installed=tuple(_installed(r) for r in records),
            pending=PendingWork(
                install=tuple(pending.install + pending.additional),
                upgrade=tuple(pending.upgrade),
                remove=tuple(pending.remove),
                at_shutdown=tuple(pending.at_shutdown),
            ),
            failed=tuple(_failed(r) for r in records if r.install_status == "ERROR")[:MAX_FAILED],
            events=tuple(self._events(acked)),
            epoch=epoch,
        )

    def _events(self, acked: set[int]) -> list[ReportEvent]:
        snapshot = self.agent.queue.snapshot()
        finished = [*snapshot["done"], *snapshot["errors"], *snapshot["cancelled"]]
        events = []
        for row in sorted(finished, key=lambda t: int(t["id"])):
            if row["classname"] not in EVENT_TASKS or (row["created_by"] or "") in MACHINE_USERS:
                continue
            if row["id"] in acked:
                continue
            task = self.agent.queue.get(int(row["id"]))
            if task is not None:
                events.append(_event(task))
        return events[-MAX_EVENTS:]

    def signed_report(self) -> tuple[HostReport, bytes]:
        """A new report and its signed bytes. Raises `ReportError`, `SecretFileError`."""
        report = self.build_report()
        return report, sign_report(report, self.key)

    # -- on sticks ---------------------------------------------------------------------------

    def bundle_directories(self) -> list[Path]:
        """The USB bundles among the agent's sources that are inserted now: configured ones
        and those the agent detected (`[usb] detect`)."""
        found: list[Path] = []
        for source in self.agent.sources:
            if isinstance(source, BundleSource) and (source.path / METADATA_DIR).is_dir():
                found.append(source.path)
            elif isinstance(source, DetectedBundles):  # sticks found as inserted ([usb])
                found += source.inserted()
        return list(dict.fromkeys(found))

    def write_bundle_reports(self) -> list[Path]:
        """Write this machine's signed report onto every inserted bundle; the paths written.

        A stick that cannot be written (read-only, full, pulled out) is logged and skipped.

        Raises:
            ReportError, SecretFileError: the report cannot be made or signed.
        """
        directories = self.bundle_directories()
        if not directories:
            return []
        report, data = self.signed_report()
        written = []
        for directory in directories:
            target = directory / REPORTS_DIR / f"{report.host_uuid}.json"
            try:
                target.parent.mkdir(exist_ok=True)
                write_atomic(target, data)
            except OSError as e:
                log.warning("cannot write the report onto %s: %s", directory, e.strerror or e)
                continue
            log.info("report #%d written onto %s", report.seq, target)
            written.append(target)
        return written

    # -- to the site server ------------------------------------------------------------------

    def _post(self, path: str, data: bytes) -> SiteAnswer:
        assert self.site is not None
        request = urllib.request.Request(  # noqa: S310 (http(s) only: checked by the config)
            self.site.url + path,
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"comptoir-agent/{self.agent_version}",
            },
        )
        context = None
        if self.site.url.startswith("https://"):
            context = ssl.create_default_context(
                cafile=str(self.site.ca_file) if self.site.ca_file else None
            )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self.site.timeout, context=context
            ) as response:
                return SiteAnswer(response.status, _json_body(response.read(64 * 1024)))
        except urllib.error.HTTPError as e:
            with contextlib.closing(e):
                return SiteAnswer(e.code, _json_body(e.read(64 * 1024)))

    def register(self) -> bool:
        """Register this host's key with the site; True once the site has pinned it.

        Raises:
            OSError: the site cannot be reached; SecretFileError: no enrolment secret.
        """
        assert self.site is not None
        secret_file = self.site.enrolment_secret_file
        try:
            secret = enrolment_secret(secret_file.read_bytes())
        except OSError as e:
            raise SecretFileError(
                f"{secret_file}: cannot read the site's enrolment secret: {e.strerror or e}"
            ) from e
        except ReportError as e:
            raise SecretFileError(f"{secret_file}: {e}") from e
        data = make_registration(self.key, secret, self.host_uuid, socket.gethostname())
        answer = self._post("/api/v1/hosts/register", data)
        if answer.status in (200, 201):
            self._save(registered=self.site.url)
            log.info("registered with the site server %s", self.site.url)
            return True
        self.last_error = f"registration refused ({answer.status} {answer.error})"
        log.error(
            "the site server %s refused to register this host: HTTP %s %s: %s",
            self.site.url,
            answer.status,
            answer.error,
            answer.body.get("message", ""),
        )
        return False

    def report_now(self) -> bool:
        """Register if needed, then send a report; True when the site took it.

        Never raises for the site's or the network's faults: they are logged and counted.
        """
        if self.site is None:
            return False
        try:
            delivered = self._deliver()
        except (OSError, ReportError, SecretFileError, ValueError) as e:
            delivered = False
            self.last_error = str(e)
            log.warning("cannot report to the site server %s: %s", self.site.url, e)
        self.failures = 0 if delivered else self.failures + 1
        return delivered

    def _deliver(self) -> bool:
        assert self.site is not None
        for _attempt in range(3):
            if self._state().get("registered") != self.site.url and not self.register():
                return False
            report, data = self.signed_report()
            answer = self._post(f"/api/v1/hosts/{report.host_uuid}/report", data)
            if answer.status == 200:
                self._acknowledge(report)
                self.last_error = None
                log.info("report #%d taken by the site server", report.seq)
                return True
            if answer.status == 404 and answer.error == "unknown-host":
                self._save(registered=None)  # the site forgot us: register again
                continue
            if answer.status == 409 and answer.error == "replay":
                last = answer.body.get("last_seq")
                if isinstance(last, int) and last >= report.seq:
                    self._save(seq=last)  # our state is older than the site's: catch up
                    continue
            self.last_error = f"report refused ({answer.status} {answer.error})"
            log.warning(
                "the site server refused report #%d: HTTP %s %s: %s",
                report.seq,
                answer.status,
                answer.error,
                answer.body.get("message", ""),
            )
            return False
        return False

    def _acknowledge(self, report: HostReport) -> None:
        with self._lock:
            state = self._state()
            same_history = state.get("acked_epoch", "") == report.epoch
            acked = list(state.get("acked_tasks", [])) if same_history else []
            acked += [e.id for e in report.events]
            self._save(
                acked_tasks=acked[-ACKED_KEPT:],
                acked_epoch=report.epoch,
                last_report=report.created,
            )

    # -- the thread --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the reporting thread (the first report follows the agent's first update)."""
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="comptoir-reporter", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def task_ended(self, task: AgentTask) -> None:
        """Called by the agent as a task's work ends: report soon (never blocks)."""
        if task.classname in REPORT_AFTER:
            with self._cond:
                self._ended.append((task.id, task.classname))
                self._cond.notify_all()

    def _delay(self) -> float:
        assert self.site is not None
        period = self.site.report_period_minutes * 60.0
        if self.failures == 0:
            return period
        return float(min(period, self.site.retry_seconds * 2 ** min(self.failures - 1, 30)))

    def _run(self) -> None:
        due = time.monotonic() + (self._delay() if self.site else 0)
        while True:
            with self._cond:
                while not self._stopping and not self._ended:
                    if self.site is not None and time.monotonic() >= due:
                        break
                    wait = due - time.monotonic() if self.site is not None else None
                    self._cond.wait(wait)
                if self._stopping:
                    return
                ended, self._ended = self._ended, []
            self._wait_finished([task_id for task_id, _ in ended])
            if any(kind in BUNDLE_AFTER for _, kind in ended):
                try:
                    self.write_bundle_reports()
                except (ReportError, SecretFileError, OSError) as e:
                    log.warning("cannot write the report onto the USB bundle: %s", e)
            if self.site is not None:
                self.report_now()
                due = time.monotonic() + self._delay()

    def _wait_finished(self, task_ids: list[int]) -> None:
        """Wait (a little) until the tasks are recorded as finished, so the report has them."""
        deadline = time.monotonic() + TASK_END_WAIT_S
        for task_id in task_ids:
            while time.monotonic() < deadline and not self._stopping:
                task = self.agent.queue.get(task_id)
                if task is None or task.state in ("done", "error", "cancelled"):
                    break
                time.sleep(0.02)


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {"message": raw[:200].decode("utf-8", "replace")}
    return body if isinstance(body, dict) else {}


def _installed(record: InstalledRecord) -> InstalledPackage:
    return InstalledPackage(
        package=record.package,
        version=record.version,
        maturity=record.maturity,
        install_date=record.install_date,
        status=record.install_status,
    )


def _failed(record: InstalledRecord) -> FailedPackage:
    return FailedPackage(
        package=record.package,
        version=record.version,
        when=record.install_date,
        log=tail(record.install_output),
    )


def _utc(local_iso: str | None) -> str:
    """A task's time (local, without a zone, as WAPT writes it) in UTC with a Z."""
    try:
        when = datetime.fromisoformat(local_iso) if local_iso else datetime.now()
    except ValueError:
        when = datetime.now()
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(task: AgentTask) -> ReportEvent:
    action = EVENT_TASKS[task.classname]
    if action == "upgrade" and task.params.get("shutdown"):
        action = "shutdown"
    package = str(task.params.get("request") or task.params.get("package") or "")
    return ReportEvent(
        id=task.id,
        when=_utc(task.finish_date),
        user=(task.created_by or "")[:200],
        action=action,
        package=package[:200],
        outcome=task.state if task.state in ("done", "error", "cancelled") else "error",
    )
