"""The agent itself, without HTTP: catalog, rights, and the work its tasks do.

`Agent` owns the trust store, the state, the sources, the task queue and the installer. The
HTTP service (`service.py`) only parses requests and calls it. Every decision about who may do
what is taken here: `may_act` is the one place where a user's request is checked against the
self-service rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import platform
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from agent_bridge.agent.auth import (
    Authenticator,
    ChainAuthenticator,
    Identity,
    LdapAuthenticator,
    LocalAccounts,
    TokenSigner,
    load_or_create_secret,
)
from agent_bridge.agent.bundle_source import StickWatcher, watch_sticks
from agent_bridge.agent.config import AgentConfig
from agent_bridge.agent.host import (
    HostPackageError,
    Pending,
    compute_pending,
    fetch_host_package,
    host_identity,
)
from agent_bridge.agent.installer import Installer, InstallError
from agent_bridge.agent.memory import give_back
from agent_bridge.agent.reporting import HostReporter
from agent_bridge.agent.rules import SELFSERVICE_FILE, Rules, granted_packages, merge_rules
from agent_bridge.agent.sources import Source, SourceError, fetch_icons, make_sources
from agent_bridge.agent.state import AgentState, InstalledRecord
from agent_bridge.agent.tasks import AgentTask, TaskContext, TaskQueue
from wapt.control import PackageEntry, compact_entry
from wapt.errors import VersionError, WaptError
from wapt.fsutil import fsync_directory, write_atomic
from wapt.resolve import HostProfile, resolve
from wapt.trust import TrustStore
from wapt.version import PackageRequest, entry_sort_key, version_key

log = logging.getLogger("comptoir.agent")

AGENT_VERSION = "1.8.2"
COMPTOIR_VERSION = "0.1.0"
#: sections WAPT's /packages.json never lists (service.py `all_packages`)
#: fields `/packages.json` leaves out of its rows
ROW_LEFT_OUT = frozenset({"signature", "signed_attributes"})
ANSWER_CACHE_SIZE = 64
#: new entries an update's result lists by name (a first update of 5,000 would weigh 0.5 MB)
ADDED_SHOWN = 20
UUID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
HIDDEN_SECTIONS = frozenset({"host", "unit", "profile", "restricted", "selfservice"})
SEARCHED_FIELDS = (
    "package",
    "name",
    "description",
    "description_fr",
    "keywords",
    "categories",
    "editor",
)


class AgentRefusal(Exception):
    """A request the agent refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    entry: PackageEntry
    source: Source


def build_authenticator(config: AgentConfig) -> Authenticator:
    """LDAP, local accounts, or LDAP falling back on local accounts for offline sites."""
    chain: list[Authenticator] = []
    if config.ldap is not None:
        chain.append(LdapAuthenticator(config.ldap))
    if config.accounts_file is not None:
        chain.append(LocalAccounts.from_file(config.accounts_file))
    if len(chain) == 1:
        return chain[0]
    return ChainAuthenticator(*chain)


def _installed_entry(record: InstalledRecord) -> PackageEntry:
    entry = PackageEntry({k: v for k, v in record.control.items() if isinstance(v, (str, int))})
    entry["package"], entry["version"] = record.package, record.version
    return entry


class Agent:
    """Comptoir's agent: one per machine, driven by the HTTP service and its task worker."""

    def __init__(self, config: AgentConfig, *, authenticator: Authenticator | None = None) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        config.data_dir.chmod(0o700)
        self.trust = TrustStore.from_path(config.trusted_certs)
        self.state = AgentState(config.state_file)
        self.sources: list[Source] = make_sources(config)
        self.profile = HostProfile(
            os=platform.system().lower(),
            architectures=config.architectures,
            locales=config.locales,
            maturities=config.maturities,
            agent_version=AGENT_VERSION,
        )
        self.authenticator = authenticator or build_authenticator(config)
        self.tokens = TokenSigner(load_or_create_secret(config.secret_file), config.token_lifetime)
        self.installer = Installer(config, self.trust, self.state)
        self.host_uuid = host_identity(config, self.state)
        self.queue = TaskQueue(config.tasks_file, self._execute)
        #: signed reports to the site server and onto USB bundles (`reporting.py`)
        self.reporter = HostReporter(self, agent_version=COMPTOIR_VERSION)
        self._lock = threading.RLock()
        self._catalog: list[CatalogEntry] = []
        self._discarded = 0
        self._host_package: PackageEntry | None = None
        self._pending = Pending()
        self._last_update: dict[str, Any] | None = None
        self._timer: threading.Timer | None = None
        self._catalog_generation = 0
        self._answers: OrderedDict[tuple[Any, ...], tuple[bytes, str]] = OrderedDict()
        self._stopping = threading.Event()
        self._sticks: StickWatcher | None = None
        #: the background icon fetch (`refresh_icons_soon`), and whether to run it once more
        self._icons_lock = threading.Lock()
        self._icons_thread: threading.Thread | None = None
        self._icons_again = False

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from a crash, load cached indexes, start the worker and the update timer."""
        for record in self.state.recover():
            log.warning("%s: interrupted during its last operation, marked failed", record.package)
        self.refresh_catalog(network=False)
        self.queue.start()
        self.reporter.start()
        # a USB stick inserted or pulled out: read the catalog again ([usb] detect)
        self._sticks = watch_sticks(self.sources, lambda: self.request_update(created_by="USB"))
        self.request_update(created_by="TASK MANAGER")

    def stop(self) -> None:
        self._stopping.set()
        if self._timer is not None:
            self._timer.cancel()
        self.reporter.stop()
        if self._sticks is not None:
            self._sticks.stop()
        self.queue.stop(timeout=10)
        with self._icons_lock:
            icons = self._icons_thread
        if icons is not None:
            icons.join(10)
        self.state.close()

    def _schedule_update(self) -> None:
        if self._stopping.is_set():
            return
        self._timer = threading.Timer(self.config.update_period_minutes * 60, self._periodic)
        self._timer.daemon = True
        self._timer.start()

    def _periodic(self) -> None:
        self.request_update(created_by="TASK MANAGER")

    # -- catalog -----------------------------------------------------------------------------

    def refresh_catalog(self, *, network: bool = True) -> dict[str, Any]:
        """Reload every source's verified index and recompute what is pending.

        The entries kept are compact copies (`compact_entry`: equal strings shared, empty fields
        left out), under half the memory of the parsed ones; the parsed index is dropped source by
        source, and the freed heap is given back to the system at the end.
        """
        catalog: list[CatalogEntry] = []
        shared: dict[str, str] = {}
        discarded = 0
        errors: list[str] = []
        repos: list[str] = []
        for source in self.sources:
            repos.append(source.location)
            try:
                loaded = (
                    source.load_index(self.trust) if network else source.cached_index(self.trust)
                )
            except SourceError as e:
                errors.append(str(e))
                continue
            if loaded is None:
                continue
            if loaded.warning:
                errors.append(f"{source.name}: {loaded.warning}")
            discarded += len(loaded.index.discarded)
            for d in loaded.index.discarded:
                log.warning("%s: discarded %s: %s", source.name, d.entry.filename, d.reason)
            profile = self.profile
            if source.maturities is not None:
                allowed = tuple(m for m in profile.maturities if m in source.maturities)
                profile = dataclasses.replace(profile, maturities=allowed)
            for entry in loaded.index.entries:
                if profile.why_not(entry) is None:
                    catalog.append(CatalogEntry(compact_entry(entry, shared), source))
            loaded = None  # the parsed index: free it before the next source is read
        shared.clear()
        host_package = self._host_package
        if network:
            try:
                host_package = fetch_host_package(self.config, self.host_uuid, self.trust)
            except HostPackageError as e:
                errors.append(str(e))
        before = {(c.entry.package, c.entry.version) for c in self._catalog}
        with self._lock:
            self._catalog = catalog
            self._catalog_generation += 1
            self._answers.clear()
            self._discarded = discarded
            self._host_package = host_package
            self._pending = compute_pending(
                host_package, [c.entry for c in catalog], self.installed_entries(), self.profile
            )
            added = [c.entry for c in catalog if (c.entry.package, c.entry.version) not in before]
            self._last_update = {
                "date": datetime.now().isoformat(),
                "count": len(catalog),
                "discarded_count": discarded,
                # the first few, as WAPT shows them; the count says how many in all
                "added": [
                    {k: e.get(k) for k in ("package", "version", "maturity", "locale")}
                    for e in added[:ADDED_SHOWN]
                ],
                "added_count": len(added),
                "repos": repos,
                "upgrades": self._pending.as_wapt(),
                "errors": errors + self._pending.errors,
            }
            self.state.set_param("last_update_status", self._last_update)
            result = self._last_update
        give_back()
        return result

    def catalog(self) -> list[CatalogEntry]:
        with self._lock:
            return list(self._catalog)

    def installed_entries(self) -> dict[str, PackageEntry]:
        """Packages installed and working; a failed one counts as not installed, so asking for
        it again (or the next upgrade) installs it again."""
        return {
            r.package: _installed_entry(r)
            for r in self.state.installed()
            if r.install_status == "OK"
        }

    def pending(self) -> Pending:
        with self._lock:
            return self._pending

    def rules(self) -> Rules:
        files = []
        for record in self.state.installed():
            if record.section == "selfservice" and record.persistent_dir:
                files.append(self.installer.persistent_dir(record.package_uuid) / SELFSERVICE_FILE)
        return merge_rules(files)

    # -- rights ------------------------------------------------------------------------------

    def is_admin(self, identity: Identity) -> bool:
        return self.config.admin_group in identity.groups

    def visible_names(self, identity: Identity) -> frozenset[str] | None:
        """Package names `identity` may see and act on; None means every package (admins)."""
        if self.is_admin(identity):
            return None
        return granted_packages(self.rules(), identity.groups)

    def may_act(self, identity: Identity, action: str, request_text: str) -> PackageRequest:
        """Check that `identity` may install or remove the requested package.

        Raises:
            AgentRefusal: 400 for a malformed request, 404 for an unknown package, 403 when no
                rule grants the package to one of the user's groups.
        """
        try:
            request = PackageRequest.parse(request_text)
        except VersionError as e:
            raise AgentRefusal(400, str(e)) from e
        names = {c.entry.package for c in self.catalog()}
        if action == "remove":
            names |= {r.package for r in self.state.installed()}
        if request.name not in names:
            raise AgentRefusal(404, f"unknown package {request.name!r}")
        visible = self.visible_names(identity)
        if visible is not None and request.name not in visible:
            log.warning(
                "refused: %s may not %s %s (groups: %s)",
                identity.username,
                action,
                request.name,
                ", ".join(sorted(identity.groups)) or "none",
            )
            raise AgentRefusal(403, f"{identity.username} may not {action} {request.name}")
        return request

    # -- what the API shows ------------------------------------------------------------------

    def package_dicts(
        self,
        identity: Identity,
        *,
        query: str | None = None,
        mode: str = "latest",
    ) -> list[dict[str, Any]]:
        """The catalog as `/packages.json` shows it to `identity`.

        `mode` is WAPT's: ``latest`` (newest version of each name, `previous` empty), ``default``
        (newest, older versions in `previous`), ``all`` (every version, one row each).
        """
        visible = self.visible_names(identity)
        words = [w.lower() for w in (query or "").split()]
        installed = {r.package: r for r in self.state.installed()}
        by_name: dict[str, list[CatalogEntry]] = {}
        for item in self.catalog():
            entry = item.entry
            if entry.section in HIDDEN_SECTIONS:
                continue
            if visible is not None and entry.package not in visible:
                continue
            if words and not _matches(entry, words):
                continue
            by_name.setdefault(entry.package, []).append(item)
        result = []
        for name in sorted(by_name):
            items = sorted(by_name[name], key=lambda c: entry_sort_key(c.entry), reverse=True)
            record = installed.get(name)
            shown = items if mode == "all" else items[:1]
            for item in shown:
                row = self._package_dict(item, record)
                row["previous"] = (
                    [self._package_dict(older, record) | {"previous": []} for older in items[1:]]
                    if mode == "default"
                    else []
                )
                result.append(row)
        return result

    def package_json(
        self, identity: Identity, *, query: str | None, mode: str
    ) -> tuple[bytes, str]:
        """`package_dicts` as JSON bytes, cached until the catalog or the installed state changes.

        A teacher's portal asks for the same list again and again; a catalog of 5,000 packages
        takes tens of milliseconds to build and encode, a cached answer none. Returns the body
        and its entity tag, so that a client can ask "only if it changed".
        """
        try:
            state_stamp = self.config.state_file.stat().st_mtime_ns
        except OSError:
            state_stamp = 0
        key = (
            self.visible_names(identity),
            " ".join((query or "").lower().split()),
            mode,
            self._catalog_generation,
            state_stamp,
        )
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None:
                self._answers.move_to_end(key)
                return cached
        body = orjson.dumps(self.package_dicts(identity, query=query, mode=mode))
        answer = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        with self._lock:
            self._answers[key] = answer
            while len(self._answers) > ANSWER_CACHE_SIZE:
                self._answers.popitem(last=False)
        return answer

    def _package_dict(self, item: CatalogEntry, record: InstalledRecord | None) -> dict[str, Any]:
        # Leaner than WAPT's rows, for catalogs of thousands: no signature (the agent checked
        # it; 40 % of a row's bytes) and no empty fields (clients read a missing one as "").
        row: dict[str, Any] = {
            k: v for k, v in item.entry.fields.items() if v != "" and k not in ROW_LEFT_OUT
        }
        row["repo_url"] = item.source.location
        if record is None:
            row["install_status"] = row["install_version"] = None
        else:
            row.update(
                install_status=record.install_status,
                install_version=record.version,
                install_date=record.install_date,
                explicit_by=record.install_par,
                persistent_dir=record.persistent_dir,
            )
        return row

    def status_dicts(self) -> list[dict[str, Any]]:
        """Installed packages as `/status.json` shows them."""
        newest: dict[str, PackageEntry] = {}
        for item in self.catalog():
            current = newest.get(item.entry.package)
            if current is None or version_key(item.entry.version) > version_key(current.version):
                newest[item.entry.package] = item.entry
        rows = []
        for record in self.state.installed():
            row: dict[str, Any] = dict(record.control)
            row.update(
                package=record.package,
                version=record.version,
                install_status=record.install_status,
                install_date=record.install_date,
                install_output=record.install_output,
                install_par=record.install_par,
                explicit_by=record.install_par,
                repo_version=newest[record.package].version if record.package in newest else None,
            )
            rows.append(row)
        return rows

    def checkupgrades(self) -> dict[str, Any] | None:
        if self._last_update is None:
            return None
        pending = self.pending()
        snapshot = self.queue.snapshot()
        return {
            "date": self._last_update["date"],
            "upgrades": pending.upgrades,
            "errors": self._last_update.get("errors", []),
            "running_tasks": [snapshot["running"]] if snapshot["running"] else [],
            "pending_tasks": snapshot["pending"],
            "pending": {**pending.as_wapt(), "at_shutdown": pending.at_shutdown},
            # Comptoir's additions (a WAPT client ignores them; `comptoir shutdown` reads them):
            # each shutdown item with its deadline, and the processes each install would close
            "at_shutdown": pending.shutdown_items,
            "impacted_process": pending.impacted,
        }

    # -- requests that become tasks ----------------------------------------------------------

    def request_update(self, *, created_by: str | None = None, force: bool = False) -> AgentTask:
        return self.queue.add(
            "WaptUpdate",
            "Updating available packages",
            action_key=("update",),
            params={},
            created_by=created_by,
            force=force,
            priority=10,
        )

    def request_install(
        self, request: PackageRequest, *, user: str, force: bool = False, notify_user: bool = False
    ) -> AgentTask:
        return self.queue.add(
            "WaptPackageInstall",
            f"Installation of {request} (task #{{id}})",
            action_key=("install", request.name),
            params={"request": str(request), "user": user, "force": force},
            created_by=user,
            force=force,
            notify_user=notify_user,
        )

    def request_remove(self, name: str, *, user: str) -> AgentTask:
        return self.queue.add(
            "WaptPackageRemove",
            f"Uninstall of {name} (task #{{id}})",
            action_key=("remove", name),
            params={"package": name, "user": user},
            created_by=user,
        )

    def request_upgrade(
        self, *, shutdown: bool = False, created_by: str | None = None
    ) -> AgentTask:
        return self.queue.add(
            "WaptUpgrade",
            "Upgrade of the machine" + (" at shutdown" if shutdown else ""),
            action_key=("upgrade", shutdown),
            params={"shutdown": shutdown},
            created_by=created_by,
        )

    # -- the work ----------------------------------------------------------------------------

    def _execute(self, task: AgentTask, ctx: TaskContext) -> Any:
        handlers = {
            "WaptUpdate": self._do_update,
            "WaptPackageInstall": self._do_install,
            "WaptPackageRemove": self._do_remove,
            "WaptUpgrade": self._do_upgrade,
        }
        handler = handlers.get(task.classname)
        if handler is None:
            raise InstallError(f"unknown task kind {task.classname}")
        try:
            return handler(task, ctx)
        finally:
            self.reporter.task_ended(task)

    def write_bundle_reports(self) -> list[Path]:
        """Write this machine's signed report onto every inserted USB bundle (`reporting`)."""
        return self.reporter.write_bundle_reports()

    def _do_update(self, task: AgentTask, ctx: TaskContext) -> Any:
        ctx.progress(0, "reading the package indexes")
        ctx.log("Get packages index")
        result = self.refresh_catalog(network=True)
        for error in result["errors"]:
            ctx.log(f"warning: {error}")
        ctx.log(f"{result['count']} package(s) in the repositories")
        # Icons come after the task, on a thread of their own: installs never wait for them.
        self.refresh_icons_soon()
        self._schedule_update_once()
        return result

    def newest_entries(self) -> dict[str, CatalogEntry]:
        """The newest catalog entry of each package name (WAPT's order, `entry_sort_key`)."""
        newest: dict[str, CatalogEntry] = {}
        for item in self.catalog():
            current = newest.get(item.entry.package)
            if current is None or entry_sort_key(item.entry) > entry_sort_key(current.entry):
                newest[item.entry.package] = item
        return newest

    def refresh_icons_soon(self) -> None:
        """Fetch the missing icons on a background thread (once more if one is running)."""
        with self._icons_lock:
            if self._stopping.is_set():
                return
            if self._icons_thread is not None:
                self._icons_again = True
                return
            self._icons_thread = threading.Thread(
                target=self._icons_loop, name="comptoir-icons", daemon=True
            )
            self._icons_thread.start()

    def _icons_loop(self) -> None:
        while True:
            try:
                fetched = self.refresh_icons()
                if fetched:
                    log.info("%d new icon(s)", fetched)
            except Exception:
                log.exception("fetching the icons failed; the next update tries again")
            with self._icons_lock:
                if not self._icons_again or self._stopping.is_set():
                    self._icons_thread = None
                    break
                self._icons_again = False
        give_back()  # thousands of requests' buffers, freed

    def refresh_icons(self) -> int:
        """Copy the icons of the newest entries into `cache/icons/`, like WAPT's download_icons.

        Returns how many were fetched. Only icons not there yet are asked for. Names are
        checked as UUIDs; icons must be PNG files of at most `sources.MAX_ICON` bytes. Each
        source's icons are fetched by a few threads over keep-alive connections
        (`sources.fetch_icons`); one icon's failure does not stop the others.

        Icons are a cache: each is written atomically (a reader never sees half of one) but
        without its own fsync, and the directory is synced once at the end; an icon a power
        cut left empty counts as missing and is fetched again.
        """
        icons = self.config.cache_dir / "icons"
        icons.mkdir(parents=True, exist_ok=True)
        newest = self.newest_entries()
        with os.scandir(icons) as found:
            present = {
                e.name[: -len(".png")]
                for e in found
                if e.name.endswith(".png") and e.is_file() and e.stat().st_size > 0
            }
        wanted: dict[int, tuple[Source, list[str]]] = {}
        for item in newest.values():
            package_uuid = item.entry.package_uuid
            if not UUID_PATTERN.fullmatch(package_uuid) or package_uuid in present:
                continue
            wanted.setdefault(id(item.source), (item.source, []))[1].append(package_uuid)
        fetched = 0
        count_lock = threading.Lock()

        def keep(package_uuid: str, data: bytes) -> None:
            nonlocal fetched
            write_atomic(icons / f"{package_uuid}.png", data, durable=False)
            with count_lock:
                fetched += 1

        for source, package_uuids in wanted.values():
            fetch_icons(source, package_uuids, keep, stop=self._stopping)
        if fetched:
            fsync_directory(icons)
        return fetched

    def _schedule_update_once(self) -> None:
        if self._timer is None or not self._timer.is_alive():
            self._schedule_update()

    def _install_requests(
        self,
        requests: Iterable[str],
        ctx: TaskContext,
        *,
        user: str,
        force: bool = False,
        upgrade: bool = False,
    ) -> dict[str, Any]:
        catalog = self.catalog()
        sources = {id(c.entry): c.source for c in catalog}
        installed = self.installed_entries()
        if force:
            for text in requests:
                installed.pop(PackageRequest.parse(text).name, None)
        try:
            plan = resolve(
                list(requests),
                [c.entry for c in catalog],
                self.profile,
                installed=installed,
                upgrade=upgrade,
            )
        except WaptError as e:
            raise InstallError(str(e)) from e
        for name in plan.remove:
            ctx.check_cancelled()
            ctx.log(f"Removing {name}, which conflicts with the request")
            self.installer.remove(
                name, progress=lambda p, s: ctx.progress(0, s), cancel=ctx.cancelled
            )
        done: list[str] = []
        steps = max(len(plan.install), 1)
        for i, entry in enumerate(plan.install):
            ctx.check_cancelled()

            def progress(percent: float, step: str, i: int = i) -> None:
                ctx.progress((i + percent / 100) * 100 / steps, step)

            ctx.log(f"Installing {entry.package} {entry.version}")
            record = self.installer.install(
                entry,
                sources[id(entry)],
                user=user,
                progress=progress,
                cancel=ctx.cancelled,
            )
            ctx.log(record.install_output.rstrip() or f"{entry.package}: done")
            done.append(f"{entry.package}(={entry.version})")
        for name in plan.unchanged:
            ctx.log(f"{name} is already installed")
        self._recompute_pending()
        return {"installed": done, "removed": plan.remove, "unchanged": plan.unchanged}

    def _remove_all(self, names: Iterable[str], ctx: TaskContext, *, why: str) -> None:
        for name in names:
            ctx.check_cancelled()
            ctx.log(f"Removing {name}: {why}")
            self.installer.remove(
                name, progress=lambda p, step: ctx.progress(0, step), cancel=ctx.cancelled
            )

    def _recompute_pending(self) -> None:
        with self._lock:
            self._pending = compute_pending(
                self._host_package,
                [c.entry for c in self._catalog],
                self.installed_entries(),
                self.profile,
            )
            if self._last_update is not None:
                self._last_update["upgrades"] = self._pending.as_wapt()

    def _do_install(self, task: AgentTask, ctx: TaskContext) -> Any:
        params = task.params
        return self._install_requests(
            [params["request"]], ctx, user=params["user"], force=bool(params.get("force"))
        )

    def _do_remove(self, task: AgentTask, ctx: TaskContext) -> Any:
        name = task.params["package"]
        ctx.log(f"Removing {name}")
        record = self.installer.remove(
            name, progress=lambda p, s: ctx.progress(p, s), cancel=ctx.cancelled
        )
        self._recompute_pending()
        return {"removed": [f"{record.package}(={record.version})"]}

    def _do_upgrade(self, task: AgentTask, ctx: TaskContext) -> Any:
        pending = self.pending()
        for name in pending.remove:
            ctx.log(f"Removing {name}")
            self.installer.remove(
                name, progress=lambda p, s: ctx.progress(0, s), cancel=ctx.cancelled
            )
        requests = list(pending.requests)
        if task.params.get("shutdown"):
            requests += pending.shutdown_requests
        installed_names = set(self.installed_entries())
        requests += [n for n in installed_names if n not in {r.split("(")[0] for r in requests}]
        result = self._install_requests(requests, ctx, user="", upgrade=True)
        result["removed"] = pending.remove
        return result


def _matches(entry: PackageEntry, words: list[str]) -> bool:
    text = " ".join(str(entry.get(k)) for k in SEARCHED_FIELDS).lower()
    return all(w in text for w in words)
