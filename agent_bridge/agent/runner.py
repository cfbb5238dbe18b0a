"""Runs one function of a package's `setup.py` in a child process: time limit, clean environment.

`run_setup` starts the Python interpreter isolated (`-I`) in its own session and process group,
with stdin from /dev/null, the package directory as working directory and a minimal environment
built from scratch: the agent's own variables never reach the script. A small bootstrap puts
`runtime/` (our `setuphelpers`) and the package directory on `sys.path`, loads `setup.py` as the
module `setup` with the globals WAPT gives it (`control`, `basedir`, `persistent_dir`,
`persistent_source_dir`, `params`, `force`), calls the function and writes its verdict, with the
traceback of a failure, to a JSON file: stdout is only ever the script's output, never parsed.

When the time limit passes or `cancel` is set, the whole session gets SIGTERM, then SIGKILL
after a short grace, and so do the processes the script left behind when it ends on its own: a
background process holding the output pipe can never hang the agent. Only a process that
leaves the session on purpose (`setsid`, a double fork) escapes; a package that must leave a
program running starts a service instead. The script runs as the agent's user: privileges are
not changed here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, get_args

Function = Literal["install", "uninstall", "audit", "session_setup"]
FUNCTIONS: tuple[str, ...] = get_args(Function)

#: the directory put on the child's sys.path: `setuphelpers.py`, the module packages import
RUNTIME_DIR = Path(__file__).resolve().with_name("runtime")
#: the output kept: the last MiB, the start is dropped (and said so)
OUTPUT_LIMIT = 1 << 20
#: seconds between SIGTERM and SIGKILL when the run is stopped
TERM_GRACE = 2.0
#: the most of the result file that is read: a script can write anything there
_RESULT_LIMIT = 4 << 20
_READ_CHUNK = 65536
#: on POSIX the child gets this PATH, never the agent's (as sudo's secure_path)
_SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: on Windows a process cannot work without these; they hold no secret
_WINDOWS_VARIABLES = (
    "PATH",
    "PATHEXT",
    "SYSTEMROOT",
    "SYSTEMDRIVE",
    "WINDIR",
    "COMSPEC",
    "PROGRAMFILES",
    "PROGRAMFILES(X86)",
    "PROGRAMW6432",
    "COMMONPROGRAMFILES",
    "COMMONPROGRAMFILES(X86)",
    "COMMONPROGRAMW6432",
    "PROGRAMDATA",
    "ALLUSERSPROFILE",
    "COMPUTERNAME",
    "NUMBER_OF_PROCESSORS",
    "PROCESSOR_ARCHITECTURE",
    "OS",
)

# The child's side. It reads its settings from the JSON file named by argv[1], writes its
# verdict to the result file (atomically) and never parses or prints anything else. Frames of
# this bootstrap and of importlib are cut from tracebacks: they would only be noise.
_BOOTSTRAP = r"""# Comptoir agent: runs one function of setup.py (agent_bridge/agent/runner.py)
import importlib.util, json, logging, os, sys, threading, traceback

with open(sys.argv[1], encoding="utf-8") as f:
    cfg = json.load(f)
function = cfg["function"]


def report(status, **fields):
    fields["status"] = status
    path = cfg["result"]
    with open(path + ".part", "w", encoding="utf-8") as f:
        json.dump(fields, f)
    os.replace(path + ".part", path)


def finish(code):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    main = threading.main_thread()
    if any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate()):
        os._exit(code)  # a thread the script left running must not keep the process alive
    sys.exit(code)


def first_line(exc):
    try:
        lines = str(exc).strip().splitlines()
    except Exception:
        return "(unprintable message)"
    return lines[0] if lines else ""


def failure(where, exc):
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == "<string>"
        or tb.tb_frame.f_code.co_filename.startswith("<frozen ")
    ):
        tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:
        text = "%s (no traceback)\n" % type(exc).__name__
    if isinstance(exc, SyntaxError) and where == "setup.py":
        error = "setup.py has a syntax error: %s (line %s)" % (exc.msg, exc.lineno)
    else:
        line = first_line(exc)
        error = "%s raised %s%s" % (where, type(exc).__name__, ": " + line if line else "")
    report("error", error=error, traceback=text)
    finish(1)


def call(where, target, *args):
    try:
        return target(*args)
    except SystemExit as e:
        code = e.code
        if code is None or isinstance(code, int):
            report("exit", where=where, code=code or 0)
            finish(code or 0)
        print(code, file=sys.stderr)
        report("exit", where=where, code=str(code))
        finish(1)
    except BaseException as e:
        failure(where, e)


logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
sys.path.insert(0, cfg["runtime"])
setuphelpers = call("import setuphelpers", __import__, "setuphelpers")
sys.path.insert(1, cfg["package_dir"])
injected = {
    "control": setuphelpers.PackageEntry(cfg["control"]),
    "basedir": cfg["package_dir"],
    "persistent_dir": cfg["persistent_dir"],
    "persistent_source_dir": os.path.join(cfg["package_dir"], "WAPT", "persistent"),
    "params": {},
    "force": False,
}
spec = importlib.util.spec_from_file_location(
    "setup", os.path.join(cfg["package_dir"], "setup.py")
)
module = importlib.util.module_from_spec(spec)
module.__dict__.update(injected)
sys.modules["setup"] = module
call("setup.py", spec.loader.exec_module, module)
module.__dict__.update(injected)
target = call("setup.py", getattr, module, function, None)
if target is None:
    if function == "install":
        report("error", error="setup.py has no install()", traceback=None)
        finish(1)
    print("setup.py has no %s(): nothing to do" % function)
    report("ok", returned=None)
    finish(0)
if not callable(target):
    report("error", error="setup.py: %s is not a function" % function, traceback=None)
    finish(1)
value = call(function + "()", target)
try:
    returned = None if value is None else str(value)[:10000]
except Exception:
    returned = repr(type(value))
report("ok", returned=returned)
finish(0)
"""


class RunnerError(Exception):
    """`run_setup` was called with arguments it cannot use (not a failure of the script)."""


@dataclass(frozen=True)
class RunResult:
    """How one run of a `setup.py` function ended.

    `ok` is true when the function returned (or is absent and optional, or there is no
    `setup.py` at all) and the interpreter exited with 0. `output` is stdout and stderr
    interleaved as printed, the last `OUTPUT_LIMIT` bytes, decoded as UTF-8 with replacement.
    `returncode` is the interpreter's exit code (negative: killed by that signal; `None`: no
    process, or one that could not be reaped). `error` is one line saying why `ok` is false.
    `traceback` is the script's traceback when an exception stopped it. `duration` is in
    seconds. `returned` is what the function returned, as text (an `audit()` answers `OK`,
    `WARNING` or `ERROR`), or `None`.
    """

    ok: bool
    output: str
    returncode: int | None
    error: str | None
    traceback: str | None
    duration: float
    returned: str | None = None


def run_setup(
    package_dir: Path,
    function: Function,
    *,
    control: Mapping[str, str | int],
    persistent_dir: Path | None,
    timeout: float,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    cancel: threading.Event | None = None,
) -> RunResult:
    """Run `function` of `package_dir/setup.py` in a child process and report how it ended.

    `control` holds the package's control fields (a `wapt.control.PackageEntry`'s `fields`),
    given to the script as the `control` object. `persistent_dir` is the package's persistent
    directory, given as is (the installer creates and fills it). `env` adds variables (for
    example `COMPTOIR_INSTALL_ROOT`) to the minimal environment: `PATH`, `LANG` and `LC_ALL`
    (`C.UTF-8`), `USER`/`LOGNAME`, `HOME` (a private directory that is removed afterwards) and
    `TMPDIR` (a new directory inside `package_dir`, removed afterwards). `python` is the
    interpreter to run (the agent's by default; a frozen agent must name a real one).

    A missing `install()` is an error; a missing `uninstall()`, `audit()` or
    `session_setup()` is not: there is nothing to do, as in WAPT. Without `setup.py` nothing
    runs and the result is ok. The script's own failures (an exception, a syntax error,
    `sys.exit(3)`, the time limit, cancellation) are reported in the result, never raised.

    Raises:
        RunnerError: `package_dir` is not a directory (or the TMPDIR cannot be created in
            it), `function` is not one of `FUNCTIONS`, `timeout` is not a positive number, or
            a control field or an environment variable is not text (control values may also
            be int).
    """
    started = time.monotonic()
    package_dir = _check_arguments(package_dir, function, timeout)
    fields = _check_control(control)
    extra_env = _check_env(env)
    if cancel is not None and cancel.is_set():
        return RunResult(False, "", None, "cancelled", None, 0.0)
    if not (package_dir / "setup.py").is_file():
        note = "package has no setup.py: nothing to run\n"
        return RunResult(True, note, None, None, None, time.monotonic() - started)
    scratch = Path(tempfile.mkdtemp(prefix="comptoir-setup-"))
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=".comptoir-tmp-", dir=package_dir))
    except OSError as e:
        shutil.rmtree(scratch, ignore_errors=True)
        raise RunnerError(f"{package_dir}: cannot create the script's TMPDIR: {e}") from e
    proc: subprocess.Popen[bytes] | None = None
    ended = False
    try:
        home = scratch / "home"
        home.mkdir()
        result_file = scratch / "result.json"
        settings = scratch / "run.json"
        settings.write_text(
            json.dumps(
                {
                    "function": function,
                    "runtime": str(RUNTIME_DIR),
                    "package_dir": str(package_dir),
                    "control": fields,
                    "persistent_dir": None if persistent_dir is None else str(persistent_dir),
                    "result": str(result_file),
                }
            ),
            "utf-8",
        )
        # -S: no site-packages; a package has the standard library and setuphelpers, which
        # also halves the child's start-up (about 10 ms instead of 25).
        command = [python, "-I", "-S", "-B", "-u", "-X", "utf8", "-c", _BOOTSTRAP, str(settings)]
        try:
            proc = subprocess.Popen(  # noqa: S603 (the interpreter and our own bootstrap)
                command,
                cwd=package_dir,
                env=_child_environment(home, tmp_dir, extra_env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                **_own_session(),
            )
        except OSError as e:
            failed = f"cannot start {python}: {e}"
            return RunResult(False, "", None, failed, None, time.monotonic() - started)
        output = _Output(OUTPUT_LIMIT)
        stop_reading = threading.Event()
        assert proc.stdout is not None  # stdout=PIPE
        reader = threading.Thread(
            target=_pump,
            args=(proc.stdout, output, stop_reading),
            name=f"setup.py output {proc.pid}",
            daemon=True,
        )
        reader.start()
        stopped = _wait_for_exit(proc, started + timeout, timeout, cancel)
        leftovers = _end_session(proc)
        ended = True
        if leftovers and not stopped:
            output.note(f"[comptoir: ended {leftovers} process(es) that setup.py left running]")
        returncode = _reap(proc)
        stop_reading.set()
        reader.join(2.0)
        if not reader.is_alive():
            proc.stdout.close()
        report = _read_report(result_file)
    finally:
        if proc is not None and not ended:  # interrupted by an error of ours: leave nothing
            _end_session(proc)
            _reap(proc)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    ok, error, trace, returned = _verdict(function, report, returncode, stopped)
    return RunResult(
        ok, output.text(), returncode, error, trace, time.monotonic() - started, returned
    )


# --------------------------------------------------------------------------- arguments


def _check_arguments(package_dir: Path, function: str, timeout: float) -> Path:
    if function not in FUNCTIONS:
        raise RunnerError(f"{function!r}: not a setup.py function ({', '.join(FUNCTIONS)})")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise RunnerError(f"timeout {timeout!r}: not a number")
    if not (math.isfinite(timeout) and timeout > 0):
        raise RunnerError(f"timeout {timeout!r}: must be a positive number of seconds")
    directory = Path(package_dir).resolve()
    if not directory.is_dir():
        raise RunnerError(f"{package_dir}: not a directory")
    return directory


def _check_control(control: Mapping[str, str | int]) -> dict[str, str | int]:
    fields: dict[str, str | int] = {}
    for name in control:
        value = control[name]
        if not isinstance(name, str):
            raise RunnerError(f"control field name {name!r}: not text")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RunnerError(f"control field {name}: {value!r} is neither text nor int")
        fields[name] = value
    return fields


def _check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise RunnerError(f"environment variable name {name!r}: not a valid name")
        if not isinstance(value, str) or "\0" in value:
            raise RunnerError(f"environment variable {name}: {value!r} is not text without NUL")
        checked[name] = value
    return checked


def _child_environment(home: Path, tmp_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The child's whole environment: a few fixed variables, then `extra`."""
    environment: dict[str, str] = {}
    if sys.platform == "win32":
        for name in _WINDOWS_VARIABLES:
            value = os.environ.get(name)
            if value is not None:
                environment[name] = value
        environment.update(USERPROFILE=str(home), TEMP=str(tmp_dir), TMP=str(tmp_dir))
    else:
        import pwd

        environment["PATH"] = _SECURE_PATH
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:  # a uid without a passwd entry (containers)
            user = str(os.getuid())
        environment.update(USER=user, LOGNAME=user)
    environment.update(HOME=str(home), TMPDIR=str(tmp_dir), LANG="C.UTF-8", LC_ALL="C.UTF-8")
    environment.update(extra)
    return environment


# --------------------------------------------------------------------------- the child process


def _own_session() -> dict[str, Any]:
    """`Popen` arguments that put the child in a new session and process group."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _has_exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once the child has exited, without reaping it where the system allows.

    An unreaped child keeps its pid, so its process group id cannot be reused before the
    group is signalled.
    """
    if sys.platform != "win32" and hasattr(os, "waitid"):
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # already reaped
            return True
    return proc.poll() is not None


def _reap(proc: subprocess.Popen[bytes]) -> int | None:
    """The child's exit code once it is reaped; None if it cannot be (uninterruptible sleep)."""
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def _wait_for_exit(
    proc: subprocess.Popen[bytes],
    deadline: float,
    timeout: float,
    cancel: threading.Event | None,
) -> str | None:
    """Wait for the child; return why it must be stopped ("timed out…", "cancelled") or None.

    On Linux a pidfd wakes the wait the moment the child exits; elsewhere, short sleeps.
    """
    pidfd = _open_pidfd(proc.pid)
    pause = 0.002
    try:
        while not _has_exited(proc):
            if cancel is not None and cancel.is_set():
                return "cancelled"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"timed out after {timeout:g} s"
            if pidfd is not None:
                # the cancel event cannot be selected on: look at it ten times a second
                select.select([pidfd], [], [], min(remaining, 0.1))
                continue
            pause = min(pause * 2, 0.05, remaining)
            if cancel is not None:
                cancel.wait(pause)
            else:
                time.sleep(pause)
        return None
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _session_members(session: int) -> list[int]:
    """Processes of `session` that are still alive (Linux; elsewhere an empty list).

    They may have left the child's process group with `setpgid`: the session catches them.
    """
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # after the name in parentheses: state, ppid, pgrp, session
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and fields[0] != b"Z" and int(fields[3]) == session:
            members.append(int(entry))
    return members


def _signal_session(session: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session, signum)
    for pid in _session_members(session):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _end_session(proc: subprocess.Popen[bytes]) -> int:
    """End the child and whatever it started: SIGTERM, `TERM_GRACE`, SIGKILL.

    Return how many processes other than the child were still running (Linux; elsewhere 0).
    """
    if sys.platform == "win32":
        subprocess.run(  # noqa: S603
            ["taskkill", "/F", "/T", "/PID", str(proc.pid)],  # noqa: S607
            capture_output=True,
            check=False,
        )
        proc.kill()
        return 0
    session = proc.pid  # start_new_session: the child leads its session and its group
    leftovers = [pid for pid in _session_members(session) if pid != proc.pid]
    if _has_exited(proc) and not leftovers and os.path.isdir("/proc/self"):
        return 0  # the session is empty: nothing to end
    # Elsewhere the session cannot be listed: the group is signalled whatever it holds.
    _signal_session(session, signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE
    while time.monotonic() < deadline and not (_has_exited(proc) and not _session_members(session)):
        time.sleep(0.02)
    _signal_session(session, signal.SIGKILL)
    return len(leftovers)


# --------------------------------------------------------------------------- output


class _Output:
    """The tail of the child's output, at most `limit` bytes, and notes from the runner."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self._dropped = 0
        self._notes: list[str] = []
        self._lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            self._data += chunk
            if len(self._data) > 2 * self._limit:  # trim now and then, not at every chunk
                self._trim()

    def _trim(self) -> None:
        excess = len(self._data) - self._limit
        if excess > 0:
            # do not start in the middle of a UTF-8 character
            while excess < len(self._data) and 0x80 <= self._data[excess] < 0xC0:
                excess += 1
            del self._data[:excess]
            self._dropped += excess

    def note(self, line: str) -> None:
        with self._lock:
            self._notes.append(line)

    def text(self) -> str:
        with self._lock:
            self._trim()
            text = self._data.decode("utf-8", "replace")
            if self._dropped:
                text = f"[output truncated: the first {self._dropped} bytes were dropped]\n{text}"
            if self._notes:
                text += ("" if not text or text.endswith("\n") else "\n") + "\n".join(self._notes)
                text += "\n"
            return text


def _pump(stream: IO[bytes], output: _Output, stop: threading.Event) -> None:
    """Copy the child's output until end of file, or shortly after `stop` is set."""
    if sys.platform == "win32":  # pipes cannot be polled there: block, in a daemon thread
        for chunk in iter(lambda: stream.read1(_READ_CHUNK), b""):  # type: ignore[attr-defined]
            output.feed(chunk)
        return
    fd = stream.fileno()
    drain_until: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if stop.is_set():
                drain_until = drain_until or time.monotonic() + 1.0
                if time.monotonic() > drain_until:
                    return
            if not selector.select(0.1):
                if stop.is_set():
                    return
                continue
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                return
            output.feed(chunk)


# --------------------------------------------------------------------------- the verdict


def _clean(text: object, limit: int) -> str | None:
    """Text from the child's report, or None: bounded, and encodable (no lone surrogates)."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = repr(text)
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


def _read_report(path: Path) -> dict[str, Any] | None:
    """The child's report, or None if it wrote none or something unreadable."""
    try:
        with path.open("rb") as f:
            data = f.read(_RESULT_LIMIT + 1)
    except OSError:
        return None
    if len(data) > _RESULT_LIMIT:
        return None
    try:
        report = json.loads(data)
    except ValueError:
        return None
    if not isinstance(report, dict) or report.get("status") not in ("ok", "error", "exit"):
        return None
    return report


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "could not be reaped"
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _verdict(
    function: str,
    report: dict[str, Any] | None,
    returncode: int | None,
    stopped: str | None,
) -> tuple[bool, str | None, str | None, str | None]:
    """`(ok, error, traceback, returned)` from the child's report and its exit."""
    if stopped:
        return False, stopped, None, None
    if report is None:
        return (
            False,
            f"setup.py {_describe_exit(returncode)} without reporting a result",
            None,
            None,
        )
    status = report["status"]
    if status == "error":
        error = _clean(report.get("error"), 1000) or "setup.py failed"
        return False, error.splitlines()[0], _clean(report.get("traceback"), 1 << 20), None
    if status == "exit":
        code = report.get("code")
        where = _clean(report.get("where"), 100) or f"{function}()"
        if code == 0 and returncode == 0:
            return True, None, None, None
        shown = code if isinstance(code, int) else repr(_clean(code, 200))
        return False, f"{where} called sys.exit({shown})", None, None
    if returncode != 0:
        error = f"setup.py {_describe_exit(returncode)} after {function}() returned"
        return False, error, None, None
    return True, None, None, _clean(report.get("returned"), 10000)
