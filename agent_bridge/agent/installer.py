"""Installing and removing one package: fetch, verify, extract, run `setup.py`, record.

Nothing runs before the package file has verified completely against the agent's trust store
and matched its index entry (same `package_uuid` and signature, so a repository cannot swap in
another validly signed package). `setup.py` runs in a child process (`runner.run_setup`). The
state records the package as RUNNING before the script starts, so a crash mid-install is found
at the next start and reported as failed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from agent_bridge.agent.config import AgentConfig
from agent_bridge.agent.runner import RunResult, run_setup
from agent_bridge.agent.sources import Source, SourceError, remove_cached
from agent_bridge.agent.state import AgentState, InstalledRecord
from agent_bridge.agent.tasks import TaskCancelled
from wapt.control import PackageEntry, format_control
from wapt.errors import WaptError
from wapt.package import extract_package
from wapt.trust import TrustStore

PERSISTENT = Path("WAPT") / "persistent"
MAX_OUTPUT = 256 * 1024
#: the line a package's output ends with when its `setup.py` was stopped by a cancellation
CANCELLED_HALF_WAY = (
    "cancelled while setup.py {function}() was running: it was stopped half-way, so the "
    "{what} may be incomplete"
)


class InstallError(Exception):
    """An install or removal failed; the message says which package and why."""


@dataclass(frozen=True)
class Step:
    """Where a task is: a step name and a progress figure (0-100) for the portal's bar."""

    name: str
    percent: float


#: progress(percent, step) as a task context offers it
Progress = Callable[[float, str], None]


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def _is_set(cancel: Any) -> bool:
    return cancel is not None and bool(cancel.is_set())


def _never_started(result: RunResult) -> bool:
    """True when `run_setup` saw the cancellation before starting the child: nothing ran."""
    return result.returncode is None and not result.output


def _cap(text: str) -> str:
    if len(text) <= MAX_OUTPUT:
        return text
    return "[… output cut …]\n" + text[-MAX_OUTPUT:]


class Installer:
    """Installs and removes packages for the agent; one call at a time (the task worker's)."""

    def __init__(
        self,
        config: AgentConfig,
        trust: TrustStore,
        state: AgentState,
        *,
        runner: Callable[..., RunResult] = run_setup,
    ) -> None:
        self.config = config
        self.trust = trust
        self.state = state
        self.runner = runner
        self.work_dir = config.data_dir / "work"
        self.installed_dir = config.data_dir / "installed"
        self.persistent_root = config.data_dir / "persistent"

    def persistent_dir(self, package_uuid: str) -> Path:
        return self.persistent_root / package_uuid

    def install(
        self,
        entry: PackageEntry,
        source: Source,
        *,
        user: str,
        progress: Progress,
        cancel: Any = None,
    ) -> InstalledRecord:
        """Install one package whose dependencies are already installed.

        Raises:
            InstallError: the download, the verification or `setup.py` failed; the state then
                records the package as ERROR with the output (unless it never ran).
            TaskCancelled: `cancel` was set. Before `setup.py` started, the state is left as
                it was (the previous version stays recorded, or nothing); when `setup.py` was
                stopped half-way, the package is recorded as ERROR with the output and a last
                line saying the installation was cancelled and may be incomplete.
        """
        name = entry.package
        progress(0, f"downloading {name}")
        try:
            path = source.fetch(
                entry,
                progress=lambda done, total: progress(40 * done / max(total, 1), "downloading"),
            )
        except SourceError as e:
            raise InstallError(f"{name}: download failed: {e}") from e

        progress(40, f"verifying {name}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=self.work_dir))
        try:
            try:
                verified = extract_package(path, work / "package", self.trust)
            except WaptError as e:
                remove_cached(self.config.cache_dir, entry.filename)
                raise InstallError(f"{name}: refused: {e}") from e
            if (
                verified.entry.package_uuid != entry.package_uuid
                or verified.entry.signature != entry.signature
            ):
                remove_cached(self.config.cache_dir, entry.filename)
                raise InstallError(
                    f"{name}: the file {entry.filename} is not the package its index entry "
                    "describes (different package_uuid or signature)"
                )
            return self._run_install(
                verified.entry, work / "package", source, user, progress, cancel
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run_install(
        self,
        entry: PackageEntry,
        package_dir: Path,
        source: Source,
        user: str,
        progress: Progress,
        cancel: Any,
    ) -> InstalledRecord:
        name = entry.package
        if _is_set(cancel):
            raise TaskCancelled(f"{name}: installation cancelled before setup.py ran")
        persistent = self.persistent_dir(entry.package_uuid)
        if (package_dir / PERSISTENT).is_dir():
            shutil.rmtree(persistent, ignore_errors=True)
            shutil.copytree(package_dir / PERSISTENT, persistent)
        previous = self.state.get_installed(name)
        record = InstalledRecord(
            package=name,
            version=entry.version,
            architecture=entry.architecture,
            maturity=entry.maturity,
            locale=",".join(entry.locales),
            section=entry.section,
            install_status="RUNNING",
            install_date=_now(),
            install_output="",
            install_par=user,
            source=source.location,
            package_uuid=entry.package_uuid,
            control=dict(entry.fields),
            persistent_dir=str(persistent) if persistent.is_dir() else None,
        )
        self.state.put_installed(record)
        progress(60, f"installing {name}")
        if (package_dir / "setup.py").is_file():
            result = self.runner(
                package_dir,
                "install",
                control=entry.fields,
                persistent_dir=persistent if persistent.is_dir() else None,
                timeout=self.config.install_timeout,
                env=dict(self.config.install_env),
                cancel=cancel,
            )
            record.install_output = _cap(result.output)
            if not result.ok and _is_set(cancel):
                self._cancelled_install(record, previous, result)
            if not result.ok:
                record.install_status = "ERROR"
                if result.traceback:
                    record.install_output = _cap(record.install_output + "\n" + result.traceback)
                self.state.put_installed(record)
                raise InstallError(f"{name}: setup.py install() failed: {result.error}")
        self._keep_for_uninstall(entry, package_dir)
        if previous is not None and previous.package_uuid != entry.package_uuid:
            shutil.rmtree(self.persistent_dir(previous.package_uuid), ignore_errors=True)
        record.install_status = "OK"
        self.state.put_installed(record)
        progress(100, f"{name} installed")
        return record

    def _cancelled_install(
        self, record: InstalledRecord, previous: InstalledRecord | None, result: RunResult
    ) -> None:
        """Record a cancelled install truthfully, then raise `TaskCancelled`.

        If the child never started, nothing changed on the machine: the previous record comes
        back (or none). Otherwise `setup.py` was killed half-way: ERROR, with a last line that
        says so, and the portal shows "cancelled, may be incomplete" with a retry.
        """
        name = record.package
        if _never_started(result):
            if previous is not None:
                self.state.put_installed(previous)
            else:
                self.state.remove_installed(name)
            raise TaskCancelled(f"{name}: installation cancelled before setup.py ran")
        self._stopped_half_way(record, record.install_output.rstrip(), "install", "installation")

    def _stopped_half_way(
        self, record: InstalledRecord, output: str, function: str, what: str
    ) -> NoReturn:
        """Record ERROR with `output` and the line saying `function()` was stopped half-way,
        then raise `TaskCancelled` with that line."""
        note = CANCELLED_HALF_WAY.format(function=function, what=what)
        record.install_status = "ERROR"
        record.install_output = _cap(f"{output}\n{note}")
        self.state.put_installed(record)
        raise TaskCancelled(f"{record.package}: {note}")

    def _keep_for_uninstall(self, entry: PackageEntry, package_dir: Path) -> None:
        """Keep `setup.py` and the control: `uninstall()` runs from them later, as in WAPT."""
        keep = self.installed_dir / entry.package
        shutil.rmtree(keep, ignore_errors=True)
        (keep / "WAPT").mkdir(parents=True)
        if (package_dir / "setup.py").is_file():
            shutil.copy2(package_dir / "setup.py", keep / "setup.py")
        (keep / "WAPT" / "control").write_text(format_control(entry), "utf-8")

    def remove(self, name: str, *, progress: Progress, cancel: Any = None) -> InstalledRecord:
        """Run the package's `uninstall()`, then forget it.

        Raises:
            InstallError: the package is not installed, or `uninstall()` failed (it then stays
                recorded, as ERROR, so the removal can be retried).
            TaskCancelled: `cancel` was set: before `uninstall()` started, the record is left
                as it was; when it was stopped half-way, the package stays recorded as ERROR
                with a line saying the removal may be incomplete.
        """
        record = self.state.get_installed(name)
        if record is None:
            raise InstallError(f"{name}: not installed")
        progress(10, f"removing {name}")
        keep = self.installed_dir / name
        persistent = Path(record.persistent_dir) if record.persistent_dir else None
        if (keep / "setup.py").is_file():
            result = self.runner(
                keep,
                "uninstall",
                control=record.control,
                persistent_dir=persistent,
                timeout=self.config.install_timeout,
                env=dict(self.config.install_env),
                cancel=cancel,
            )
            if not result.ok and _is_set(cancel):
                if _never_started(result):
                    raise TaskCancelled(f"{name}: removal cancelled before setup.py ran")
                output = f"{record.install_output}\n{result.output}"
                self._stopped_half_way(record, output, "uninstall", "removal")
            if not result.ok:
                record.install_status = "ERROR"
                record.install_output = _cap(
                    f"{record.install_output}\nuninstall failed: {result.error}\n{result.output}"
                )
                self.state.put_installed(record)
                raise InstallError(f"{name}: setup.py uninstall() failed: {result.error}")
        if persistent is not None:
            shutil.rmtree(persistent, ignore_errors=True)
        shutil.rmtree(keep, ignore_errors=True)
        self.state.remove_installed(name)
        progress(100, f"{name} removed")
        return record
