"""WAPT's `setuphelpers` for Comptoir's agent: the module a package's `setup.py` imports.

Every WAPT package starts with `from setuphelpers import *`. Comptoir's runner puts this file's
directory on the child's `sys.path`, so that line imports this module. It re-implements the
common helpers of WAPT 1.8/2.x under the same names, with compatible signatures; it is written
from WAPT's documentation and observed behaviour, not from its code. Pure standard library, it
imports on Linux, macOS and Windows.

Supported everywhere:

- commands: `run` (returns a `str` with `.returncode`, raises `CalledProcessErrorOutput` or
  `TimeoutExpired`), `run_notfatal`;
- files: `filecopyto`, `copytree2` (with `default_oncopy`, `default_skip`,
  `default_overwrite`, `default_overwrite_older`), `mkdirs`, `ensure_dir`, `remove_file`,
  `remove_tree`, `makepath`, `isfile`, `isdir`, `dir_is_empty`, `all_files`,
  `get_file_properties` (an empty dict, as WAPT's own non-Windows version answers);
- INI files: `inifile_readstring`, `inifile_writestring`, `inifile_hasoption`,
  `inifile_hassection`, `inifile_deleteoption`, `inifile_deletesection`;
- processes: `find_processes`, `isrunning`, `killalltasks`, `killtree` (Linux reads /proc,
  macOS uses `ps`, Windows `tasklist`/`taskkill`);
- system: `get_os_name`, `get_os_version`, `get_computername`, `get_hostname`,
  `get_current_user`, `user_home_directory`, `get_language`, `installed_softwares`
  (Linux: dpkg or rpm databases; macOS: an empty list);
- text and dates: `ensure_list`, `ensure_unicode`, `currentdate`, `currentdatetime`,
  `Version`;
- `error(reason)` raises `EWaptSetupException`; `PackageEntry` is the class of the `control`
  global the runner gives the script;
- the modules `os`, `sys`, `shutil`, `glob`, `time`, `datetime`, `platform` and `logger`,
  which WAPT's star import also provides and many scripts use without importing them.

Windows-only helpers (`install_msi_if_needed`, `install_exe_if_needed`, the `registry_*` and
`reg_*` functions, shortcuts, `register_uninstall`, `uninstall_key_exists`,
`add_shutdown_script`, `programfiles`, `system32`, …) exist, with the `HKEY_*`, `KEY_*` and
`REG_*` constants, so that a script fails with a clear message: they raise
`UnsupportedOnThisSystemError` ("registry_readstring is Windows-only; this system is Linux").
Comptoir's agent does not implement them on Windows yet either, and says so. `wget` and
`wgets` raise it too: a package ships its files, it does not download them while installing.

Not provided: WAPT's `WAPT` object, `host_info`, `dmi_info`, services, users and groups,
scheduled tasks, message boxes.
"""

from __future__ import annotations

import configparser
import csv
import datetime
import fnmatch
import getpass
import glob
import locale
import logging
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import total_ordering
from typing import IO, Any, NamedTuple, NoReturn

__all__ = [
    "HKEY_CLASSES_ROOT",
    "HKEY_CURRENT_CONFIG",
    "HKEY_CURRENT_USER",
    "HKEY_LOCAL_MACHINE",
    "HKEY_USERS",
    "KEY_ALL_ACCESS",
    "KEY_READ",
    "KEY_WRITE",
    "REG_DWORD",
    "REG_EXPAND_SZ",
    "REG_MULTI_SZ",
    "REG_SZ",
    "CalledProcessError",
    "CalledProcessErrorOutput",
    "EWaptSetupException",
    "PackageEntry",
    "ProcessInfo",
    "RunOutput",
    "TimeoutExpired",
    "UnsupportedOnThisSystemError",
    "Version",
    "add_shutdown_script",
    "add_to_system_path",
    "all_files",
    "copytree2",
    "create_desktop_shortcut",
    "create_programs_menu_shortcut",
    "create_shortcut",
    "create_user_desktop_shortcut",
    "create_user_programs_menu_shortcut",
    "currentdate",
    "currentdatetime",
    "datetime",
    "default_oncopy",
    "default_overwrite",
    "default_overwrite_older",
    "default_skip",
    "dir_is_empty",
    "ensure_dir",
    "ensure_list",
    "ensure_unicode",
    "error",
    "filecopyto",
    "find_processes",
    "get_computername",
    "get_current_user",
    "get_file_properties",
    "get_hostname",
    "get_language",
    "get_msi_properties",
    "get_os_name",
    "get_os_version",
    "glob",
    "inifile_deleteoption",
    "inifile_deletesection",
    "inifile_hasoption",
    "inifile_hassection",
    "inifile_readstring",
    "inifile_writestring",
    "install_exe_if_needed",
    "install_msi_if_needed",
    "installed_softwares",
    "isdir",
    "isfile",
    "isrunning",
    "iswin64",
    "killalltasks",
    "killtree",
    "logger",
    "makepath",
    "mkdirs",
    "os",
    "platform",
    "programfiles",
    "programfiles32",
    "programfiles64",
    "reg_closekey",
    "reg_delvalue",
    "reg_getvalue",
    "reg_key_exists",
    "reg_openkey_noredir",
    "reg_setvalue",
    "reg_value_exists",
    "register_uninstall",
    "registry_delete",
    "registry_deletekey",
    "registry_readstring",
    "registry_set",
    "registry_setstring",
    "remove_desktop_shortcut",
    "remove_file",
    "remove_from_system_path",
    "remove_programs_menu_shortcut",
    "remove_shutdown_script",
    "remove_tree",
    "remove_user_desktop_shortcut",
    "remove_user_programs_menu_shortcut",
    "run",
    "run_notfatal",
    "service_installed",
    "service_is_running",
    "service_start",
    "service_stop",
    "set_environ_variable",
    "shutil",
    "sys",
    "system32",
    "time",
    "uninstall_cmd",
    "uninstall_key_exists",
    "unregister_uninstall",
    "unset_environ_variable",
    "user_home_directory",
    "wget",
    "wgets",
    "windows_version",
]

logger = logging.getLogger("setuphelpers")

CalledProcessError = subprocess.CalledProcessError
TimeoutExpired = subprocess.TimeoutExpired

# Windows registry constants, with winreg's values, so that a call such as
# registry_readstring(HKEY_LOCAL_MACHINE, ...) reaches the function and its clear error.
HKEY_CLASSES_ROOT = 0x80000000
HKEY_CURRENT_USER = 0x80000001
HKEY_LOCAL_MACHINE = 0x80000002
HKEY_USERS = 0x80000003
HKEY_CURRENT_CONFIG = 0x80000005
KEY_READ = 0x20019
KEY_WRITE = 0x20006
KEY_ALL_ACCESS = 0xF003F
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_DWORD = 4
REG_MULTI_SZ = 7

_READ_CHUNK = 65536
#: after a command exits, how long run() waits for the rest of its output: a background
#: process it started may keep the pipe open for ever
_OUTPUT_GRACE = 2.0


# --------------------------------------------------------------------------- errors


class EWaptSetupException(Exception):
    """A package script gave up: raised by `error()`."""


class UnsupportedOnThisSystemError(NotImplementedError):
    """A helper that this system, or Comptoir's agent, does not provide."""


class CalledProcessErrorOutput(subprocess.CalledProcessError):
    """`run()`'s command returned a code it did not accept; the message includes the output."""

    def __str__(self) -> str:
        return (
            f"Command {self.cmd!r} returned non-zero exit status {self.returncode}.\n"
            f"Output:{self.output!r}"
        )


def _system_label() -> str:
    system = platform.system() or sys.platform
    return {"Darwin": "macOS"}.get(system, system)


def _windows_only(name: str) -> NoReturn:
    if sys.platform == "win32":
        raise UnsupportedOnThisSystemError(
            f"{name} is not implemented by Comptoir's agent on Windows yet"
        )
    raise UnsupportedOnThisSystemError(f"{name} is Windows-only; this system is {_system_label()}")


def error(reason: object) -> NoReturn:
    """Stop the script: raise `EWaptSetupException("Fatal error : <reason>")`."""
    raise EWaptSetupException(f"Fatal error : {reason}")


# --------------------------------------------------------------------------- text, lists, dates


def ensure_unicode(data: object) -> str | None:
    """Return `data` as text, for logs: bytes decoded (UTF-8, else replaced), `None` kept.

    An exception becomes `"ClassName: message"`.
    """
    if data is None:
        return None
    if isinstance(data, str):
        return data
    if isinstance(data, bytes | bytearray):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(data).decode(locale.getpreferredencoding(False) or "utf-8", "replace")
    if isinstance(data, BaseException):
        try:
            text = str(data)
        except Exception:
            text = ""
        return f"{type(data).__name__}: {text}"
    try:
        return str(data)
    except Exception:
        return repr(data)


def ensure_list(
    csv_or_list: str | Iterable[Any] | None,
    ignore_empty_args: bool = True,
    allow_none: bool = False,
) -> list[Any] | None:
    """Return a list: a comma-separated string is split and stripped, a tuple becomes a list.

    `None` gives `[]`, or `None` when `allow_none`. Empty items of a string are dropped unless
    `ignore_empty_args` is false.
    """
    if csv_or_list is None:
        return None if allow_none else []
    if isinstance(csv_or_list, str):
        items = [item.strip() for item in csv_or_list.split(",")]
        return [item for item in items if item] if ignore_empty_args else items
    if isinstance(csv_or_list, list):
        return csv_or_list
    return list(csv_or_list)


def currentdate() -> str:
    """Today as `YYYYMMDD`."""
    return time.strftime("%Y%m%d")


def currentdatetime() -> str:
    """Now as `YYYYMMDD-HHMMSS` (local time)."""
    return time.strftime("%Y%m%d-%H%M%S")


_NATURAL_PART = re.compile(r"(\d+)")


@total_ordering
class Version:
    """A dotted version compared member by member, naturally (`1.10 > 1.9`).

    As WAPT's `Version`: a missing member sorts before any other (`1.0 < 1.0.0`), and
    `members_count` pads with `0` or truncates. Compares with `Version` or `str`.
    """

    def __init__(self, version: object, members_count: int | None = None) -> None:
        members = [member.strip() for member in str(version).strip().split(".")]
        if members_count is not None:
            members = (members + ["0"] * members_count)[:members_count]
        self.members: list[str] = members

    @staticmethod
    def _member_key(member: str) -> tuple[tuple[int, int | str], ...]:
        parts = (p for p in _NATURAL_PART.split(member.lower()) if p)
        return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)

    def _key(self) -> tuple[tuple[tuple[int, int | str], ...], ...]:
        return tuple(self._member_key(member) for member in self.members)

    @staticmethod
    def _coerce(other: object) -> Version | None:
        if isinstance(other, Version):
            return other
        if isinstance(other, str | int):
            return Version(other)
        return None

    def __eq__(self, other: object) -> bool:
        coerced = self._coerce(other)
        return NotImplemented if coerced is None else self._key() == coerced._key()

    def __lt__(self, other: object) -> bool:
        coerced = self._coerce(other)
        return NotImplemented if coerced is None else self._key() < coerced._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return ".".join(self.members)

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"


# --------------------------------------------------------------------------- the control object

#: the fields of WAPT's PackageEntry: reading one that the control file lacks gives ""
_CONTROL_FIELD_NAMES = """\
package version architecture section priority name categories maintainer description
depends conflicts maturity locale target_os min_os_version max_os_version min_wapt_version
sources installed_size impacted_process description_fr description_pl description_de
description_es description_pt description_it description_nl description_ru audit_schedule
editor keywords licence homepage package_uuid valid_from valid_until forced_install_on
changelog signer signer_fingerprint signature signature_date signed_attributes filename
size md5sum"""
_CONTROL_FIELDS = frozenset(_CONTROL_FIELD_NAMES.split())


class PackageEntry:
    """The control fields of the package being run: the `control` global of `setup.py`.

    Fields read as attributes (`control.package`, `control.version`) or as items
    (`control["package"]`). A known WAPT field that the control file lacks reads as `""`; an
    unknown attribute raises `AttributeError`.
    """

    def __init__(self, fields: Mapping[str, Any] | None = None, **more: Any) -> None:
        data: dict[str, Any] = dict(fields or {})
        data.update(more)
        object.__setattr__(self, "_fields", data)

    def __getattr__(self, name: str) -> Any:
        fields: dict[str, Any] = object.__getattribute__(self, "_fields")
        if name in fields:
            return fields[name]
        if name in _CONTROL_FIELDS:
            return ""
        raise AttributeError(f"control has no field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        self._fields[name] = value

    def __getitem__(self, name: str) -> Any:
        if name in self._fields:
            return self._fields[name]
        if name in _CONTROL_FIELDS:
            return ""
        raise KeyError(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._fields[name] = value

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def get(self, name: str, default: Any = None) -> Any:
        """The field's value, or `default` when the control file lacks it."""
        return self._fields.get(name, default)

    def keys(self) -> list[str]:
        """The names of the fields present."""
        return list(self._fields)

    def items(self) -> list[tuple[str, Any]]:
        """`(name, value)` pairs of the fields present."""
        return list(self._fields.items())

    def as_dict(self) -> dict[str, Any]:
        """A copy of the fields."""
        return dict(self._fields)

    def asrequirement(self) -> str:
        """`package(=version)`, as WAPT writes a requirement for this exact package."""
        return f"{self.package}(={self.version})"

    def __repr__(self) -> str:
        return f"PackageEntry({self.package!r}, {self.version!r})"


# --------------------------------------------------------------------------- commands


class RunOutput(str):
    """The text a command printed, with its exit code as `.returncode`."""

    returncode: int


class _LineCollector:
    """Lines from a command's stdout and stderr, kept in the order they arrived."""

    def __init__(self, on_write: Callable[[str], object] | None) -> None:
        self.output: list[str] = []
        #: where stderr lines go: `output` itself when merged
        self.stderr: list[str] = self.output
        self._on_write = on_write
        self._lock = threading.Lock()

    def add(self, line: str, from_stderr: bool) -> None:
        with self._lock:
            if self._on_write is not None:
                self._on_write(line)
            (self.stderr if from_stderr else self.output).append(line)


def _decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode(locale.getpreferredencoding(False) or "utf-8", "replace")


def _read_lines(
    stream: IO[bytes], collector: _LineCollector, from_stderr: bool, stop: threading.Event
) -> None:
    """Read `stream` line by line until end of file, or shortly after `stop` is set (POSIX)."""
    pending = b""
    if os.name == "posix":
        fd = stream.fileno()
        drain_until: float | None = None
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                if stop.is_set():
                    drain_until = drain_until or time.monotonic() + 0.5
                    if time.monotonic() > drain_until:
                        break
                if not selector.select(0.1):
                    if stop.is_set():
                        break
                    continue
                chunk = os.read(fd, _READ_CHUNK)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    collector.add(_decode_line(line + b"\n"), from_stderr)
    else:  # Windows pipes cannot be polled: a blocking read, in a daemon thread
        for line in iter(stream.readline, b""):
            collector.add(_decode_line(line), from_stderr)
    if pending:
        collector.add(_decode_line(pending), from_stderr)


def run(
    cmd: str | list[str] | tuple[str, ...],
    shell: bool = True,
    timeout: float | None = 600,
    accept_returncodes: Iterable[int] | None = (0, 3010),
    on_write: Callable[[str], object] | None = None,
    pidlist: list[int] | None = None,
    return_stderr: bool | list[str] | None = True,
    **kwargs: Any,
) -> RunOutput:
    """Run `cmd` and return what it printed, as a `str` with a `.returncode` attribute.

    `cmd` is a command line (run by the shell unless `shell=False`) or a list of arguments.
    stdin is empty. `on_write(line)` is called for each line printed. stderr lines are part
    of the result, in the order printed, when `return_stderr` is true; appended to it instead
    when it is a list; left out when it is false. The command's pid is in `pidlist` while it
    runs. Other keyword arguments go to `subprocess.Popen` (`cwd`, `env`, …).

    The command stays in the script's process group, so the agent's time limit ends it too.
    After it exits, its output is read for a few more seconds at most: a background process
    it started may keep the pipe open for ever.

    Raises:
        CalledProcessErrorOutput: the exit code is not in `accept_returncodes` (`None`
            accepts any code); `.output` holds everything printed, stderr included.
        TimeoutExpired: still running after `timeout` seconds; the command and its children
            are killed first.
        OSError: the command could not be started (`shell=False` and no such program).
    """
    logger.info('Run "%s"', cmd if isinstance(cmd, str) else " ".join(map(str, cmd)))
    collector = _LineCollector(on_write)
    if isinstance(return_stderr, list):
        collector.stderr = return_stderr
    elif not return_stderr:
        collector.stderr = []
    merged = collector.stderr is collector.output
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(  # noqa: S603 (running the package's commands is the point)
        cmd,
        shell=shell,
        stdout=subprocess.PIPE,
        # one pipe for both keeps the order in which the lines were printed
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        **kwargs,
    )
    if pidlist is not None:
        pidlist.append(proc.pid)
    stop = threading.Event()
    streams = [s for s in (proc.stdout, proc.stderr) if s is not None]
    readers = [
        threading.Thread(target=_read_lines, args=(s, collector, s is proc.stderr, stop))
        for s in streams
    ]
    for reader in readers:
        reader.daemon = True
        reader.start()
    try:
        returncode = proc.wait(timeout=timeout)
        deadline = time.monotonic() + _OUTPUT_GRACE
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        killtree(proc.pid)
        proc.kill()
        proc.wait()
        raise subprocess.TimeoutExpired(
            cmd, timeout or 0, output="".join(collector.output)
        ) from None
    finally:
        stop.set()
        for reader in readers:
            reader.join(1.0)
        if not any(reader.is_alive() for reader in readers):
            for stream in streams:
                stream.close()
        if pidlist is not None and proc.pid in pidlist:
            pidlist.remove(proc.pid)
    output = "".join(collector.output)
    if accept_returncodes is not None and returncode not in set(accept_returncodes):
        if collector.stderr is not collector.output:
            output += "".join(collector.stderr)
        raise CalledProcessErrorOutput(returncode, cmd, output)
    if returncode:
        logger.warning("%s returned %s", cmd, returncode)
    result = RunOutput(output)
    result.returncode = returncode
    return result


def run_notfatal(*cmd: Any, **kwargs: Any) -> str:
    """`run()` accepting any exit code; on any other failure, print a warning and return ""."""
    kwargs["accept_returncodes"] = None
    try:
        return run(*cmd, **kwargs)
    except Exception as e:
        print(f"Warning : {ensure_unicode(e)}")
        return ""


# --------------------------------------------------------------------------- files


def isfile(path: str | os.PathLike[str]) -> bool:
    """True if `path` is an existing file."""
    return os.path.isfile(path)


def isdir(path: str | os.PathLike[str]) -> bool:
    """True if `path` is an existing directory."""
    return os.path.isdir(path)


def makepath(*parts: str | os.PathLike[str]) -> str:
    """Join path parts; a bare Windows drive (`c:`) as the first part gets its separator."""
    first, *rest = [os.fspath(p) for p in parts]
    if first.endswith(":"):
        first += os.sep
    return os.path.join(first, *rest)


def mkdirs(path: str | os.PathLike[str]) -> str:
    """Create directory `path` and its parents if needed; return the path."""
    os.makedirs(path, exist_ok=True)
    return os.fspath(path)


def ensure_dir(filename: str | os.PathLike[str]) -> None:
    """Create the directory that will hold file `filename`, with its parents."""
    directory = os.path.dirname(os.fspath(filename))
    if directory:
        os.makedirs(directory, exist_ok=True)


def dir_is_empty(path: str | os.PathLike[str]) -> bool:
    """True if `path` is a directory with nothing in it."""
    return os.path.isdir(path) and not os.listdir(path)


def remove_file(path: str | os.PathLike[str]) -> None:
    """Delete file `path`; a missing file is only logged."""
    if os.path.isfile(path) or os.path.islink(path):
        os.remove(path)
    else:
        logger.warning("remove_file: %s does not exist", path)


def remove_tree(*args: Any, **kwargs: Any) -> None:
    """`shutil.rmtree`, ignoring errors unless `ignore_errors=False` is given."""
    kwargs.setdefault("ignore_errors", True)
    shutil.rmtree(*args, **kwargs)


def all_files(rootdir: str | os.PathLike[str], pattern: str | None = None) -> list[str]:
    """Every file under `rootdir`, recursively, whose name matches `pattern` (`*.exe`)."""
    result = []
    for directory, _dirs, names in os.walk(os.path.abspath(rootdir)):
        for name in names:
            if pattern is None or fnmatch.fnmatch(name, pattern):
                result.append(os.path.join(directory, name))
    return sorted(result)


def get_file_properties(fname: str, ignore_warning: bool = True) -> dict[str, str]:
    """The version resource of a Windows executable; `{}` here, as WAPT answers off Windows."""
    return {}


def filecopyto(filename: str | os.PathLike[str], target: str | os.PathLike[str]) -> str:
    """Copy file `filename` to `target`, a directory or a file name; return the new path.

    A relative `filename` is relative to the package directory (the current directory).
    """
    source = os.fspath(filename)
    destination = os.fspath(target)
    if os.path.isdir(destination):
        destination = os.path.join(destination, os.path.basename(source))
    verb = "Replacing" if os.path.isfile(destination) else "Copying"
    logger.info("%s %s", verb, destination)
    shutil.copy(source, destination)
    return destination


def default_oncopy(msg: str, src: str, dst: str) -> bool:
    """Log each copy at debug level and let it happen."""
    logger.debug('%s : "%s" to "%s"', msg, src, dst)
    return True


def default_skip(src: str, dst: str) -> bool:
    """Keep the existing file."""
    return False


def default_overwrite(src: str, dst: str) -> bool:
    """Replace the existing file."""
    return True


def default_overwrite_older(src: str, dst: str) -> bool:
    """Replace the existing file only if it is older than the source."""
    return os.stat(src).st_mtime > os.stat(dst).st_mtime


def copytree2(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    ignore: Callable[[str, list[str]], Iterable[str]] | None = None,
    onreplace: Callable[[str, str], bool] = default_overwrite,
    oncopy: Callable[[str, str, str], bool] | None = None,
    enable_replace_at_reboot: bool = False,
) -> list[str]:
    """Copy directory `src` into `dst`, merging with what is there; return the files copied.

    A relative `src` is relative to the package directory. `dst` is created if needed.
    `ignore(directory, names)` returns names to leave out, as for `shutil.copytree`.
    `onreplace(src, dst)` decides whether an existing file is replaced (`default_overwrite`,
    `default_skip`, `default_overwrite_older`). `oncopy(what, src, dst)` is called before each
    copy ("create directory", "directory", "copy", "overwrites") and may refuse it by returning
    False. `enable_replace_at_reboot` is a Windows feature: accepted and ignored.

    Raises:
        shutil.Error: some files could not be copied; lists every one of them.
    """
    callback = oncopy or default_oncopy
    problems: list[tuple[str, str, str]] = []
    copied: list[str] = []
    _copytree2(os.fspath(src), os.fspath(dst), ignore, onreplace, callback, problems, copied)
    if problems:
        raise shutil.Error(problems)
    return copied


def _copytree2(
    src: str,
    dst: str,
    ignore: Callable[[str, list[str]], Iterable[str]] | None,
    onreplace: Callable[[str, str], bool],
    oncopy: Callable[[str, str, str], bool],
    problems: list[tuple[str, str, str]],
    copied: list[str],
) -> None:
    names = sorted(os.listdir(src))
    ignored = set(ignore(src, names)) if ignore is not None else set()
    if not os.path.isdir(dst) and oncopy("create directory", src, dst):
        os.makedirs(dst)
    for name in names:
        if name in ignored:
            continue
        source, target = os.path.join(src, name), os.path.join(dst, name)
        try:
            if os.path.isdir(source):
                if oncopy("directory", source, target):
                    _copytree2(source, target, ignore, onreplace, oncopy, problems, copied)
            elif os.path.isfile(target):
                if onreplace(source, target) and oncopy("overwrites", source, target):
                    os.unlink(target)
                    shutil.copy2(source, target)
                    copied.append(target)
            elif oncopy("copy", source, target):
                shutil.copy2(source, target)
                copied.append(target)
        except OSError as e:
            logger.error('Error copying "%s" to "%s": %s', source, target, e)
            problems.append((source, target, str(e)))


# --------------------------------------------------------------------------- INI files


def _read_ini(inifilename: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser.read(inifilename, encoding="utf-8")
    return parser


def _write_ini(parser: configparser.RawConfigParser, inifilename: str) -> None:
    with open(inifilename, "w", encoding="utf-8") as f:
        parser.write(f)


def inifile_hassection(inifilename: str, section: str) -> bool:
    """True if the INI file has `[section]`."""
    return _read_ini(inifilename).has_section(section)


def inifile_hasoption(inifilename: str, section: str, key: str) -> bool:
    """True if the INI file has `key` in `[section]`."""
    return _read_ini(inifilename).has_option(section, key)


def inifile_readstring(
    inifilename: str, section: str, key: str, default: str | None = None
) -> str | None:
    """The value of `key` in `[section]`, or `default`."""
    parser = _read_ini(inifilename)
    if parser.has_option(section, key):
        return parser.get(section, key)
    return default


def inifile_writestring(inifilename: str, section: str, key: str, value: str) -> None:
    """Set `key` in `[section]` (both created if needed) and rewrite the file."""
    parser = _read_ini(inifilename)
    if not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, key, value)
    _write_ini(parser, inifilename)


def inifile_deleteoption(inifilename: str, section: str, key: str) -> bool:
    """Remove `key` from `[section]`; True if it was there."""
    parser = _read_ini(inifilename)
    removed = parser.has_section(section) and parser.remove_option(section, key)
    if removed:
        _write_ini(parser, inifilename)
    return removed


def inifile_deletesection(inifilename: str, section: str) -> bool:
    """Remove `[section]`; True if it was there."""
    parser = _read_ini(inifilename)
    removed = parser.remove_section(section)
    if removed:
        _write_ini(parser, inifilename)
    return removed


# --------------------------------------------------------------------------- processes


class ProcessInfo(NamedTuple):
    """A running process: its pid, its parent's pid (0 if unknown) and its name."""

    pid: int
    ppid: int
    name: str
    exe: str = ""


def _linux_processes() -> list[ProcessInfo]:
    result = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0].decode("utf-8", "replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        # the name is in parentheses and may itself contain spaces and parentheses
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields and fields[0] == "Z":
            continue  # a zombie is already dead
        result.append(ProcessInfo(int(entry), int(fields[1]), name, os.path.basename(argv0)))
    return result


def _ps_processes() -> list[ProcessInfo]:
    listing = subprocess.run(
        ["ps", "-axo", "pid=,ppid=,stat=,comm="],  # noqa: S607 (ps from the clean PATH)
        capture_output=True,
        text=True,
        errors="replace",
        check=True,
    ).stdout
    result = []
    for line in listing.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[0].isdigit() and not parts[2].startswith("Z"):
            command = parts[3].strip()
            result.append(
                ProcessInfo(int(parts[0]), int(parts[1]), os.path.basename(command), command)
            )
    return result


def _windows_processes() -> list[ProcessInfo]:
    listing = subprocess.run(
        ["tasklist", "/FO", "CSV", "/NH"],  # noqa: S607
        capture_output=True,
        text=True,
        errors="replace",
        check=True,
    ).stdout
    return [
        ProcessInfo(int(row[1]), 0, row[0])
        for row in csv.reader(listing.splitlines())
        if len(row) > 1 and row[1].isdigit()
    ]


def _processes() -> list[ProcessInfo]:
    if sys.platform == "win32":
        return _windows_processes()
    if os.path.isdir("/proc/self"):
        return _linux_processes()
    return _ps_processes()


def _strip_exe(name: str) -> str:
    name = name.lower()
    return name[:-4] if name.endswith(".exe") else name


def _matches(process: ProcessInfo, wanted: str) -> bool:
    target = _strip_exe(os.path.basename(wanted))
    return target in {_strip_exe(process.name), _strip_exe(process.exe)}


def _own_lineage(processes: list[ProcessInfo]) -> set[int]:
    """This process and its ancestors: never killed by killalltasks."""
    parents = {p.pid: p.ppid for p in processes}
    pid, lineage = os.getpid(), set()
    while pid and pid not in lineage:
        lineage.add(pid)
        pid = parents.get(pid, 0)
    return lineage


def find_processes(process_name: str) -> list[ProcessInfo]:
    """The running processes named `process_name` (case-insensitive, `.exe` optional)."""
    processes = _processes()
    mine = _own_lineage(processes)
    return [p for p in processes if _matches(p, process_name) and p.pid not in mine]


def isrunning(processname: str) -> bool:
    """True if a process named `processname` is running (`.exe` optional)."""
    return bool(find_processes(processname))


def _descendants(pid: int, processes: list[ProcessInfo]) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in processes:
        children.setdefault(p.ppid, []).append(p.pid)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if child not in found and child != pid:
            found.append(child)
            todo.extend(children.get(child, []))
    return found


def _kill(pid: int) -> None:
    try:
        if sys.platform == "win32":
            subprocess.run(  # noqa: S603
                ["taskkill", "/F", "/T", "/PID", str(pid)],  # noqa: S607
                capture_output=True,
                check=False,
            )
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def killtree(pid: int, including_parent: bool = True) -> None:
    """Kill process `pid`'s descendants, then `pid` itself unless `including_parent` is false.

    The script's own process and its ancestors are spared.
    """
    processes = [] if sys.platform == "win32" else _processes()  # taskkill /T kills the tree
    mine = _own_lineage(processes)
    for child in reversed(_descendants(pid, processes)):
        if child not in mine:
            _kill(child)
    if including_parent and pid not in mine:
        _kill(pid)


def killalltasks(exenames: str | list[str], include_children: bool = True) -> list[tuple[int, str]]:
    """Kill every process with one of these names (`.exe` optional); return `(pid, name)`s.

    The script's own process and its ancestors are spared.
    """
    names = ensure_list(exenames) or []
    if not names:
        return []
    processes = _processes()
    mine = _own_lineage(processes)
    killed = []
    for process in processes:
        if process.pid in mine or not any(_matches(process, n) for n in names):
            continue
        logger.info("Kill process %s (%s)", process.pid, process.name)
        if include_children:
            for child in reversed(_descendants(process.pid, processes)):
                if child not in mine:
                    _kill(child)
        _kill(process.pid)
        killed.append((process.pid, process.name))
    return killed


# --------------------------------------------------------------------------- system


def get_os_name() -> str:
    """`Linux`, `Windows` or `Darwin`."""
    return platform.system()


def get_os_version() -> str:
    """The distribution's version on Linux (`12`, `24.04`), the OS version elsewhere."""
    if sys.platform == "darwin":
        return platform.mac_ver()[0]
    if sys.platform == "win32":
        return platform.version()
    try:
        return platform.freedesktop_os_release().get("VERSION_ID", "") or platform.release()
    except OSError:
        return platform.release()


def get_computername() -> str:
    """The host name without its domain part."""
    return socket.gethostname().split(".", 1)[0]


def get_hostname() -> str:
    """The fully qualified host name, in lower case."""
    return socket.getfqdn().lower()


def get_current_user() -> str:
    """The name of the user running the script."""
    return getpass.getuser()


def user_home_directory() -> str:
    """The home directory of the user running the script (`HOME`)."""
    return os.path.expanduser("~")


def get_language() -> str:
    """The two-letter language of the locale (`fr`), `en` when it names none (`C`, `POSIX`)."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(variable, "")
        language = value.split(":")[0].split(".")[0].split("_")[0]
        if len(language) == 2 and language.isalpha():
            return language.lower()
    return "en"


def _software_entry(name: str, version: str, publisher: str, date: str = "") -> dict[str, str]:
    return {
        "key": "",
        "name": name,
        "version": version,
        "install_date": date,
        "install_location": "",
        "uninstall_string": "",
        "publisher": publisher,
        "system_component": "",
    }


def _query_lines(command: list[str]) -> list[str]:
    try:
        listing = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, errors="replace", timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return listing.splitlines()


def installed_softwares(
    keywords: str | list[str] = "", name: str | None = None
) -> list[dict[str, str]]:
    """Software installed by the system's package manager (dpkg or rpm), as WAPT's dicts.

    Each dict has `key, name, version, install_date, install_location, uninstall_string,
    publisher, system_component`. `keywords` (every word must appear in the name or
    publisher) and `name` (a regular expression matched at the start of the name) filter it.
    macOS: an empty list.

    Raises:
        UnsupportedOnThisSystemError: on Windows (the uninstall registry is not read yet).
    """
    if sys.platform == "win32":
        _windows_only("installed_softwares")
    entries: list[dict[str, str]] = []
    if shutil.which("dpkg-query"):
        fmt = "${Package}\t${Version}\t${Homepage}\t${db:Status-Abbrev}\n"
        for line in _query_lines(["dpkg-query", "-W", "-f", fmt]):
            parts = line.split("\t")
            if len(parts) == 4 and parts[3].startswith("ii"):
                entries.append(_software_entry(parts[0], parts[1], parts[2]))
    elif shutil.which("rpm"):
        fmt = "%{NAME}\t%{VERSION}-%{RELEASE}\t%{URL}\n"
        for line in _query_lines(["rpm", "-qa", "--qf", fmt]):
            parts = line.split("\t")
            if len(parts) == 3:
                entries.append(_software_entry(*parts))
    words = [w.lower() for w in (keywords.split() if isinstance(keywords, str) else keywords)]
    pattern = re.compile(name) if name is not None else None

    def wanted(entry: dict[str, str]) -> bool:
        if pattern is not None and not pattern.match(entry["name"]):
            return False
        text = f"{entry['name']} {entry['publisher']}".lower()
        return all(word in text for word in words)

    return [entry for entry in entries if wanted(entry)]


# --------------------------------------------------------------------------- Windows-only
# Same names and parameters as WAPT's, so that scripts fail with a clear message.


def install_msi_if_needed(
    msi: str,
    min_version: str | None = None,
    killbefore: Any = None,
    accept_returncodes: Iterable[int] = (0, 3010, 1641),
    timeout: float = 300,
    properties: Any = None,
    get_version: Any = None,
    remove_old_version: bool = False,
    force: bool = False,
    uninstallkeylist: Any = None,
    pidlist: Any = None,
    key: str | None = None,
    **kwargs: Any,
) -> NoReturn:
    """Install an MSI unless it is already installed (Windows)."""
    _windows_only("install_msi_if_needed")


def install_exe_if_needed(
    exe: str,
    silentflags: str | None = None,
    key: str | None = None,
    min_version: str | None = None,
    killbefore: Any = None,
    accept_returncodes: Iterable[int] = (0, 3010, 1641),
    timeout: float = 300,
    get_version: Any = None,
    remove_old_version: bool = False,
    force: bool = False,
    uninstallkeylist: Any = None,
    pidlist: Any = None,
    **kwargs: Any,
) -> NoReturn:
    """Run an installer unless its uninstall key shows it is installed (Windows)."""
    _windows_only("install_exe_if_needed")


def get_msi_properties(msi_filename: str) -> NoReturn:
    """The Property table of an MSI file (Windows)."""
    _windows_only("get_msi_properties")


def uninstall_cmd(guid: str) -> NoReturn:
    """The command that uninstalls the software registered under `guid` (Windows)."""
    _windows_only("uninstall_cmd")


def registry_readstring(root: int, path: str, keyname: str, default: Any = "") -> NoReturn:
    """Read a registry value (Windows)."""
    _windows_only("registry_readstring")


def registry_set(root: int, path: str, keyname: str, value: Any, type: Any = None) -> NoReturn:
    """Write a registry value (Windows)."""
    _windows_only("registry_set")


def registry_setstring(
    root: int, path: str, keyname: str, value: str, type: int = REG_SZ
) -> NoReturn:
    """Write a registry string (Windows)."""
    _windows_only("registry_setstring")


def registry_delete(root: int, path: str, valuename: str) -> NoReturn:
    """Delete a registry value (Windows)."""
    _windows_only("registry_delete")


def registry_deletekey(root: int, path: str, keyname: str, force: bool = False) -> NoReturn:
    """Delete a registry key (Windows)."""
    _windows_only("registry_deletekey")


def reg_openkey_noredir(
    rootkey: int, subkeypath: str, sam: int = KEY_READ, create_if_missing: bool = False
) -> NoReturn:
    """Open a registry key without WOW64 redirection (Windows)."""
    _windows_only("reg_openkey_noredir")


def reg_closekey(hkey: Any) -> NoReturn:
    """Close a registry key (Windows)."""
    _windows_only("reg_closekey")


def reg_getvalue(key: Any, name: str, default: Any = None) -> NoReturn:
    """Read a value of an open registry key (Windows)."""
    _windows_only("reg_getvalue")


def reg_setvalue(key: Any, name: str, value: Any, type: int = REG_SZ) -> NoReturn:
    """Write a value of an open registry key (Windows)."""
    _windows_only("reg_setvalue")


def reg_delvalue(key: Any, name: str) -> NoReturn:
    """Delete a value of an open registry key (Windows)."""
    _windows_only("reg_delvalue")


def reg_key_exists(rootkey: int, subkeypath: str) -> NoReturn:
    """True if the registry key exists (Windows)."""
    _windows_only("reg_key_exists")


def reg_value_exists(rootkey: int, subkeypath: str, value_name: str) -> NoReturn:
    """True if the registry value exists (Windows)."""
    _windows_only("reg_value_exists")


def uninstall_key_exists(
    uninstallkey: str, keywords: Any = None, name: str | None = None
) -> NoReturn:
    """True if the uninstall key exists in the registry (Windows)."""
    _windows_only("uninstall_key_exists")


def register_uninstall(
    uninstallkey: str,
    uninstallstring: str,
    win64app: bool = False,
    quiet_uninstall_string: str = "",
    install_location: str | None = None,
    display_name: str | None = None,
    display_version: str | None = None,
    publisher: str = "",
    icon: str | None = None,
) -> NoReturn:
    """Register software in the uninstall registry (Windows)."""
    _windows_only("register_uninstall")


def unregister_uninstall(uninstallkey: str, win64app: bool = False) -> NoReturn:
    """Remove software from the uninstall registry (Windows)."""
    _windows_only("unregister_uninstall")


def create_shortcut(
    path: str, target: str = "", arguments: str = "", wDir: str = "", icon: str = ""
) -> NoReturn:
    """Create a .lnk or .url shortcut (Windows)."""
    _windows_only("create_shortcut")


def create_desktop_shortcut(
    label: str, target: str = "", arguments: str = "", wDir: str = "", icon: str = ""
) -> NoReturn:
    """Create a shortcut on the desktop of all users (Windows)."""
    _windows_only("create_desktop_shortcut")


def create_user_desktop_shortcut(
    label: str, target: str = "", arguments: str = "", wDir: str = "", icon: str = ""
) -> NoReturn:
    """Create a shortcut on the current user's desktop (Windows)."""
    _windows_only("create_user_desktop_shortcut")


def create_programs_menu_shortcut(
    label: str, target: str = "", arguments: str = "", wDir: str = "", icon: str = ""
) -> NoReturn:
    """Create a start-menu shortcut for all users (Windows)."""
    _windows_only("create_programs_menu_shortcut")


def create_user_programs_menu_shortcut(
    label: str, target: str = "", arguments: str = "", wDir: str = "", icon: str = ""
) -> NoReturn:
    """Create a start-menu shortcut for the current user (Windows)."""
    _windows_only("create_user_programs_menu_shortcut")


def remove_desktop_shortcut(label: str) -> NoReturn:
    """Remove a shortcut from the desktop of all users (Windows)."""
    _windows_only("remove_desktop_shortcut")


def remove_user_desktop_shortcut(label: str) -> NoReturn:
    """Remove a shortcut from the current user's desktop (Windows)."""
    _windows_only("remove_user_desktop_shortcut")


def remove_programs_menu_shortcut(label: str) -> NoReturn:
    """Remove a start-menu shortcut of all users (Windows)."""
    _windows_only("remove_programs_menu_shortcut")


def remove_user_programs_menu_shortcut(label: str) -> NoReturn:
    """Remove a start-menu shortcut of the current user (Windows)."""
    _windows_only("remove_user_programs_menu_shortcut")


def add_shutdown_script(cmd: str, parameters: str) -> NoReturn:
    """Register a machine shutdown script in the local group policy (Windows)."""
    _windows_only("add_shutdown_script")


def remove_shutdown_script(cmd: str, parameters: str) -> NoReturn:
    """Remove a machine shutdown script from the local group policy (Windows)."""
    _windows_only("remove_shutdown_script")


def add_to_system_path(path: str) -> NoReturn:
    """Append a directory to the system PATH in the registry (Windows)."""
    _windows_only("add_to_system_path")


def remove_from_system_path(path: str) -> NoReturn:
    """Remove a directory from the system PATH in the registry (Windows)."""
    _windows_only("remove_from_system_path")


def set_environ_variable(name: str, value: str, type: int = REG_EXPAND_SZ) -> NoReturn:
    """Set a system environment variable in the registry (Windows)."""
    _windows_only("set_environ_variable")


def unset_environ_variable(name: str) -> NoReturn:
    """Remove a system environment variable from the registry (Windows)."""
    _windows_only("unset_environ_variable")


def service_installed(service_name: str) -> NoReturn:
    """True if the Windows service exists (Windows)."""
    _windows_only("service_installed")


def service_is_running(service_name: str) -> NoReturn:
    """True if the Windows service runs (Windows)."""
    _windows_only("service_is_running")


def service_start(service_name: str, timeout: float = 15) -> NoReturn:
    """Start a Windows service (Windows)."""
    _windows_only("service_start")


def service_stop(service_name: str, timeout: float = 15) -> NoReturn:
    """Stop a Windows service (Windows)."""
    _windows_only("service_stop")


def programfiles() -> NoReturn:
    """The native Program Files directory (Windows)."""
    _windows_only("programfiles")


def programfiles32() -> NoReturn:
    """The 32-bit Program Files directory (Windows)."""
    _windows_only("programfiles32")


def programfiles64() -> NoReturn:
    """The 64-bit Program Files directory (Windows)."""
    _windows_only("programfiles64")


def system32() -> NoReturn:
    """The native system32 directory (Windows)."""
    _windows_only("system32")


def iswin64() -> NoReturn:
    """True on 64-bit Windows (Windows)."""
    _windows_only("iswin64")


def windows_version(members_count: int = 3) -> NoReturn:
    """The Windows version as a `Version` (Windows)."""
    _windows_only("windows_version")


def wget(url: str, target: str | None = None, *args: Any, **kwargs: Any) -> NoReturn:
    """Download a file: not available while installing with Comptoir's agent."""
    raise UnsupportedOnThisSystemError(
        "wget is not available to setup.py in Comptoir's agent: ship the file in the package"
    )


def wgets(url: str, *args: Any, **kwargs: Any) -> NoReturn:
    """Fetch a URL's content: not available while installing with Comptoir's agent."""
    raise UnsupportedOnThisSystemError(
        "wgets is not available to setup.py in Comptoir's agent: ship the file in the package"
    )
