"""The setup.py runner, with real child processes, and the setuphelpers that packages import."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agent_bridge.agent import runner
from agent_bridge.agent.runner import RUNTIME_DIR, RunnerError, RunResult, run_setup
from comptoir.demo import SETUP_TEMPLATE
from tests.conftest import TEST_DATA, WAPT_FIXTURES
from wapt.control import parse_control

SCRIPTS = TEST_DATA / "setup_scripts"
CONTROL: dict[str, str | int] = {
    "package": "test-runner",
    "version": "1.2-3",
    "name": "Runner test (démo)",
    "installed_size": 2048,
}

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory the scripts may write to (passed as RUNNER_TEST_DIR)."""
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


def package(tmp_path: Path, script: str, files: dict[str, str] | None = None) -> Path:
    """A package directory whose setup.py is `tests/data/setup_scripts/<script>.py`."""
    directory = tmp_path / "pkg"
    directory.mkdir()
    shutil.copyfile(SCRIPTS / f"{script}.py", directory / "setup.py")
    for name, text in (files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text, "utf-8")
    return directory


def run(
    package_dir: Path,
    work: Path | None = None,
    function: runner.Function = "install",
    timeout: float = 20,
    **kwargs: Any,
) -> RunResult:
    env = dict(kwargs.pop("env", {}))
    if work is not None:
        env["RUNNER_TEST_DIR"] = str(work)
    kwargs.setdefault("persistent_dir", None)
    return run_setup(package_dir, function, control=CONTROL, timeout=timeout, env=env, **kwargs)


def read_pid(path: Path) -> int:
    assert path.is_file(), f"the script did not get as far as writing {path.name}"
    return int(path.read_text())


def is_gone(pid: int) -> bool:
    """True if `pid` no longer runs: absent, or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(b")") + 2 :][:1] in (b"Z", b"X")


def wait_until_gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while not is_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------------- globals, files, env


def test_install_writes_its_file(tmp_path: Path, work: Path) -> None:
    result = run(package(tmp_path, "writes_marker"), work)
    assert result.ok, result
    assert (result.returncode, result.error, result.traceback) == (0, None, None)
    assert (work / "marker.txt").read_text() == "test-runner 1.2-3\n"
    assert result.output == "marker written\n"
    assert 0 < result.duration < 10


def test_uninstall_runs_the_uninstall_function(tmp_path: Path, work: Path) -> None:
    pkg = package(tmp_path, "writes_marker")
    assert run(pkg, work).ok
    result = run(pkg, work, "uninstall")
    assert result.ok, result
    assert not (work / "marker.txt").exists()
    assert "marker removed" in result.output


def test_script_sees_wapt_globals_and_a_clean_environment(
    tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPTOIR_SECRET_TEST", "do-not-leak")
    monkeypatch.setenv("PYTHONPATH", "/should/not/matter")
    pkg = package(tmp_path, "introspect")
    persistent = tmp_path / "persistent"
    result = run(pkg, work, persistent_dir=persistent, env={"COMPTOIR_INSTALL_ROOT": "/opt/x"})
    assert result.ok, result
    seen = json.loads((work / "introspect.json").read_text())

    assert seen["control_package"] == "test-runner"
    assert seen["control_version"] == "1.2-3"
    assert seen["control_name"] == "Runner test (démo)"
    assert seen["control_installed_size"] == 2048
    assert seen["control_missing_known"] == ""
    assert seen["control_requirement"] == "test-runner(=1.2-3)"
    assert "no_such_field" in seen["unknown_field_error"]
    assert seen["at_import"] == {"package": "test-runner", "basedir": str(pkg)}
    assert seen["basedir"] == str(pkg)
    assert seen["persistent_dir"] == str(persistent)
    assert seen["persistent_source_dir"] == str(pkg / "WAPT" / "persistent")
    assert seen["params"] == {}
    assert seen["module_name"] == "setup"
    assert seen["cwd"] == str(pkg)
    assert seen["isolated"] == 1
    assert seen["stdin"] == ""
    assert seen["sys_path_head"] == [str(RUNTIME_DIR), str(pkg)]
    assert seen["stdout_encoding"].lower().replace("-", "") == "utf8"

    environ = seen["environ"]
    assert "COMPTOIR_SECRET_TEST" not in environ
    assert set(environ) == {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "USER",
        "LOGNAME",
        "RUNNER_TEST_DIR",
        "COMPTOIR_INSTALL_ROOT",
    }
    assert environ["COMPTOIR_INSTALL_ROOT"] == "/opt/x"
    assert environ["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert environ["LANG"] == environ["LC_ALL"] == "C.UTF-8"
    # TMPDIR is inside the package, HOME is private; both are gone after the run
    assert Path(environ["TMPDIR"]).parent == pkg
    assert not Path(environ["TMPDIR"]).exists()
    assert not Path(environ["HOME"]).exists()
    assert sorted(p.name for p in pkg.iterdir()) == ["setup.py"]


@pytest.mark.parametrize("function", ["uninstall", "audit", "session_setup"])
def test_missing_optional_function_is_nothing_to_do(
    tmp_path: Path, function: runner.Function
) -> None:
    result = run(package(tmp_path, "install_only"), function=function)
    assert result.ok, result
    assert (result.returncode, result.error) == (0, None)
    assert result.output == f"setup.py has no {function}(): nothing to do\n"


def test_missing_install_is_an_error(tmp_path: Path) -> None:
    result = run(package(tmp_path, "uninstall_only"))
    assert not result.ok
    assert result.error == "setup.py has no install()"
    assert result.returncode == 1


def test_install_that_is_not_a_function_is_an_error(tmp_path: Path) -> None:
    result = run(package(tmp_path, "install_not_callable"))
    assert not result.ok
    assert result.error == "setup.py: install is not a function"


def test_package_without_setup_py_has_nothing_to_run(tmp_path: Path) -> None:
    result = run_setup(tmp_path, "install", control=CONTROL, persistent_dir=None, timeout=5)
    assert result.ok
    assert result.returncode is None
    assert "no setup.py" in result.output


def test_audit_return_value_is_reported(tmp_path: Path) -> None:
    result = run(package(tmp_path, "audit_warning"), function="audit")
    assert result.ok, result
    assert result.returned == "WARNING"
    assert result.output == "auditing\n"


# --------------------------------------------------------------------------- failures


def test_raising_install_reports_the_exception_and_traceback(tmp_path: Path) -> None:
    result = run(package(tmp_path, "raises"))
    assert not result.ok
    assert result.returncode == 1
    assert result.error == "install() raised ValueError: unexpected version 1.2-3: café"
    assert result.traceback is not None
    assert result.traceback.startswith("Traceback (most recent call last):\n")
    assert 'setup.py", line 12, in install' in result.traceback
    assert 'setup.py", line 7, in check_version' in result.traceback
    assert "<string>" not in result.traceback  # the bootstrap's frames are cut
    assert result.traceback.endswith("second line\n")
    # what the script printed is output, never a verdict
    assert result.output == '{"status": "ok", "returned": null}\n'


def test_exception_while_importing_setup_py(tmp_path: Path) -> None:
    result = run(package(tmp_path, "raises_at_import"))
    assert not result.ok
    assert result.error == "setup.py raised RuntimeError: cannot even load"
    assert result.traceback is not None
    assert 'setup.py", line 4, in <module>' in result.traceback
    assert "importlib" not in result.traceback


def test_syntax_error(tmp_path: Path) -> None:
    result = run(package(tmp_path, "syntax_error"))
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith("setup.py has a syntax error: ")
    assert result.error.endswith("(line 6)")
    assert result.traceback is not None and "SyntaxError" in result.traceback


def test_error_helper_raises_wapt_exception(tmp_path: Path) -> None:
    result = run(package(tmp_path, "calls_error"))
    assert not result.ok
    assert result.error == (
        "install() raised EWaptSetupException: Fatal error : the licence server is unreachable"
    )


@pytest.mark.parametrize(
    ("script", "ok", "returncode", "error"),
    [
        ("exit_3", False, 3, "install() called sys.exit(3)"),
        ("exit_0", True, 0, None),
        ("exit_message", False, 1, "install() called sys.exit('fatal: disk full')"),
        ("os_exit", False, 0, "setup.py exited with code 0 without reporting a result"),
    ],
)
def test_exits(tmp_path: Path, script: str, ok: bool, returncode: int, error: str | None) -> None:
    result = run(package(tmp_path, script))
    assert (result.ok, result.returncode, result.error) == (ok, returncode, error)


def test_exit_message_is_in_the_output(tmp_path: Path) -> None:
    result = run(package(tmp_path, "exit_message"))
    assert "fatal: disk full" in result.output


def test_windows_only_helper_fails_clearly(tmp_path: Path) -> None:
    result = run(package(tmp_path, "windows_only"))
    assert not result.ok
    system = "Linux" if sys.platform == "linux" else "macOS"
    assert result.error == (
        "install() raised UnsupportedOnThisSystemError: "
        f"install_msi_if_needed is Windows-only; this system is {system}"
    )


def test_python_that_cannot_start(tmp_path: Path) -> None:
    result = run(package(tmp_path, "install_only"), python=str(tmp_path / "no-python"))
    assert not result.ok
    assert result.returncode is None
    assert result.error is not None and result.error.startswith("cannot start ")


# --------------------------------------------------------------------------- stopping


@linux_only
def test_hanging_script_is_killed_at_the_timeout(tmp_path: Path, work: Path) -> None:
    result = run(package(tmp_path, "hangs"), work, timeout=1)
    assert not result.ok
    assert result.error == "timed out after 1 s"
    assert 1 <= result.duration < 1 + runner.TERM_GRACE + 2
    assert result.returncode == -15
    assert result.output == "sleeping\n"
    pid = read_pid(work / "child.pid")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: its process group is gone
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


@linux_only
def test_sigterm_ignored_then_sigkill(
    tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "TERM_GRACE", 0.5)
    result = run(package(tmp_path, "ignores_sigterm"), work, timeout=1)
    assert result.error == "timed out after 1 s"
    assert result.returncode == -9
    assert result.duration < 4
    with pytest.raises(ProcessLookupError):
        os.kill(read_pid(work / "child.pid"), 0)


@linux_only
def test_grandchild_holding_the_pipe_is_killed_at_the_timeout(tmp_path: Path, work: Path) -> None:
    result = run(package(tmp_path, "grandchild_hangs"), work, timeout=1.5)
    assert result.error == "timed out after 1.5 s"
    assert result.duration < 1.5 + runner.TERM_GRACE + 2
    assert wait_until_gone(read_pid(work / "grandchild.pid"))


@linux_only
def test_grandchild_left_running_is_ended_after_a_normal_return(tmp_path: Path, work: Path) -> None:
    result = run(package(tmp_path, "grandchild_left"), work)
    assert result.ok, result
    assert result.duration < runner.TERM_GRACE + 3
    assert result.output.startswith("left a grandchild behind\n")
    assert "[comptoir: ended 1 process(es) that setup.py left running]" in result.output
    assert wait_until_gone(read_pid(work / "grandchild.pid"))


def test_thread_left_running_does_not_keep_the_run_alive(tmp_path: Path) -> None:
    result = run(package(tmp_path, "thread_left"), timeout=10)
    assert result.ok, result
    assert result.duration < 5


@linux_only
def test_cancel_from_another_thread(tmp_path: Path, work: Path) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    try:
        result = run(package(tmp_path, "hangs"), work, timeout=30, cancel=cancel)
    finally:
        timer.cancel()
    assert not result.ok
    assert result.error == "cancelled"
    assert result.duration < 0.5 + runner.TERM_GRACE + 2
    with pytest.raises(ProcessLookupError):
        os.kill(read_pid(work / "child.pid"), 0)


def test_cancelled_before_start_runs_nothing(tmp_path: Path, work: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    result = run(package(tmp_path, "writes_marker"), work, cancel=cancel)
    assert (result.ok, result.error, result.returncode) == (False, "cancelled", None)
    assert not (work / "marker.txt").exists()


# --------------------------------------------------------------------------- output


def test_huge_output_is_capped_to_its_end(tmp_path: Path) -> None:
    result = run(package(tmp_path, "huge_output"))
    assert result.ok, result
    assert result.output.startswith("[output truncated: the first ")
    assert result.output.endswith("x\nTHE END\n")
    assert len(result.output.encode()) <= runner.OUTPUT_LIMIT + 100
    dropped = int(result.output.split("the first ")[1].split(" bytes")[0])
    assert dropped + runner.OUTPUT_LIMIT == 3 * 1024 * 1024 + len("THE END\n")


def test_output_that_is_not_utf8_is_decoded_with_replacement(tmp_path: Path) -> None:
    result = run(package(tmp_path, "not_utf8"))
    assert result.ok, result
    assert result.output == "before é\ncaf\ufffd \ufffd\ufffd\ufffd\nafter\n"


def test_stdout_and_stderr_are_interleaved_in_order(tmp_path: Path) -> None:
    result = run(package(tmp_path, "interleaved"))
    assert result.output == "out 0\nerr 0\nout 1\nerr 1\nout 2\nerr 2\n"


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"function": "update_package"}, "not a setup.py function"),
        ({"timeout": 0}, "must be a positive number"),
        ({"timeout": float("nan")}, "must be a positive number"),
        ({"env": {"A=B": "x"}}, "not a valid name"),
        ({"env": {"A": "x\0y"}}, "not text without NUL"),
        ({"control": {"package": ["a"]}}, "neither text nor int"),
    ],
)
def test_bad_arguments_raise(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "function": "install",
        "control": CONTROL,
        "persistent_dir": None,
        "timeout": 5,
        "env": None,
    }
    arguments.update(change)
    with pytest.raises(RunnerError, match=message):
        run_setup(package(tmp_path, "install_only"), **arguments)


def test_package_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match="not a directory"):
        run_setup(tmp_path / "nope", "install", control={}, persistent_dir=None, timeout=5)


# --------------------------------------------------------------------------- real packages


def extract(wapt_file: Path, destination: Path) -> Path:
    with zipfile.ZipFile(wapt_file) as archive:
        archive.extractall(destination)
    return destination


def test_fixture_package_acme_hello_installs_its_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wapt_file = WAPT_FIXTURES / "packages" / "acme-hello_1.0.0-1_PROD_fr.wapt"
    pkg = extract(wapt_file, tmp_path / "acme-hello")
    control = parse_control((pkg / "WAPT" / "control").read_bytes()).fields
    markers = tmp_path / "markers"
    markers.mkdir()
    marker = markers / "acme-hello.installed"

    # the agent's own environment does not reach the script
    monkeypatch.setenv("WAPT_FIXTURE_MARKER_DIR", str(markers))
    quiet = run_setup(pkg, "install", control=control, persistent_dir=None, timeout=20)
    assert quiet.ok, quiet
    assert quiet.output == "acme-hello: nothing to do\n"
    assert not marker.exists()

    env = {"WAPT_FIXTURE_MARKER_DIR": str(markers)}
    result = run_setup(pkg, "install", control=control, persistent_dir=None, timeout=20, env=env)
    assert result.ok, result
    assert marker.read_text() == "acme-hello 1.0.0-1\n"
    assert result.output == f"acme-hello: marker written to {marker}\n"

    removed = run_setup(pkg, "uninstall", control=control, persistent_dir=None, timeout=20, env=env)
    assert removed.ok, removed
    assert not marker.exists()


def test_demo_package_template_installs_its_files(tmp_path: Path) -> None:
    pkg = tmp_path / "demo-atlas"
    (pkg / "files").mkdir(parents=True)
    (pkg / "files" / "atlas.txt").write_text("Paris, Berlin\n", "utf-8")
    (pkg / "setup.py").write_text(SETUP_TEMPLATE.format(package="demo-atlas"), "utf-8")
    root = tmp_path / "root"
    env = {"COMPTOIR_INSTALL_ROOT": str(root)}
    result = run_setup(pkg, "install", control=CONTROL, persistent_dir=None, timeout=20, env=env)
    assert result.ok, result
    assert (root / "demo-atlas" / "atlas.txt").read_text("utf-8") == "Paris, Berlin\n"
    removed = run_setup(pkg, "uninstall", control=CONTROL, persistent_dir=None, timeout=20, env=env)
    assert removed.ok, removed
    assert not (root / "demo-atlas").exists()


# --------------------------------------------------------------------------- setuphelpers


@pytest.fixture(scope="module")
def helpers() -> Iterator[ModuleType]:
    """The runtime's setuphelpers, loaded from its file as the child loads it."""
    spec = importlib.util.spec_from_file_location("setuphelpers", RUNTIME_DIR / "setuphelpers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


def test_runtime_is_not_a_package() -> None:
    assert not (RUNTIME_DIR / "__init__.py").exists()
    assert (RUNTIME_DIR / "setuphelpers.py").is_file()


def test_helpers_inside_a_real_run(tmp_path: Path, work: Path) -> None:
    files = {"files/one.txt": "one\n", "files/sub/two.txt": "two\n"}
    result = run(package(tmp_path, "uses_helpers", files), work)
    assert result.ok, result
    seen = json.loads((work / "helpers.json").read_text())
    assert seen["mkdirs"] is True
    assert seen["filecopyto"] == "one\n"
    assert seen["copytree2"] == ["tree/one.txt", "tree/sub/two.txt"]
    assert seen["run"] == ["from-run\nto-stderr\n", 0]
    assert seen["run_error"] == [4, "failing\n"]
    assert seen["run_notfatal"] == ""
    assert seen["os_name"] == platform.system()
    assert 'INFO Run "echo from-run; echo to-stderr >&2"' in result.output


def test_run_returns_output_with_returncode(helpers: ModuleType) -> None:
    lines: list[str] = []
    pids: list[int] = []
    pids_while_running: list[int] = []

    def on_write(line: str) -> None:
        lines.append(line)
        pids_while_running.extend(pids)

    out = helpers.run("echo one; echo two >&2", on_write=on_write, pidlist=pids)
    assert isinstance(out, helpers.RunOutput) and issubclass(helpers.RunOutput, str)
    assert out == "one\ntwo\n"  # one pipe: the order printed
    assert out.returncode == 0
    assert lines == ["one\n", "two\n"]
    assert len(set(pids_while_running)) == 1
    assert pids == []  # removed once the command ended


def test_run_stderr_options(helpers: ModuleType) -> None:
    assert helpers.run("echo out; echo err >&2", return_stderr=False) == "out\n"
    errors: list[str] = []
    assert helpers.run("echo out; echo err >&2", return_stderr=errors) == "out\n"
    assert errors == ["err\n"]
    assert helpers.run(["echo", "a b"], shell=False) == "a b\n"


def test_run_raises_on_a_bad_return_code(helpers: ModuleType) -> None:
    with pytest.raises(helpers.CalledProcessErrorOutput) as caught:
        helpers.run("echo partial; echo oops >&2; exit 2", return_stderr=False)
    assert caught.value.returncode == 2
    assert caught.value.output == "partial\noops\n"
    assert "returned non-zero exit status 2" in str(caught.value)
    assert isinstance(caught.value, subprocess.CalledProcessError)
    assert helpers.run("exit 2", accept_returncodes=[2]).returncode == 2
    assert helpers.run("exit 3", accept_returncodes=(0, 3)).returncode == 3
    assert helpers.run("exit 7", accept_returncodes=None).returncode == 7
    assert helpers.run_notfatal("exit 9") == ""


@linux_only
def test_run_timeout_kills_the_command(helpers: ModuleType, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(helpers.TimeoutExpired):
        helpers.run(f"sleep 30 & echo $! > {tmp_path}/bg.pid; wait", timeout=0.5)
    assert time.monotonic() - started < 5
    assert wait_until_gone(int((tmp_path / "bg.pid").read_text()))


def test_run_does_not_wait_for_a_background_process(
    helpers: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(helpers, "_OUTPUT_GRACE", 0.3)
    started = time.monotonic()
    out = helpers.run(f"sleep 30 & echo $! > {tmp_path}/bg.pid; echo started")
    assert out == "started\n"
    assert time.monotonic() - started < 5
    os.kill(int((tmp_path / "bg.pid").read_text()), 9)


def test_filecopyto_to_directory_or_file(helpers: ModuleType, tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("A")
    target_dir = tmp_path / "out"
    target_dir.mkdir()
    assert helpers.filecopyto(str(source), str(target_dir)) == str(target_dir / "a.txt")
    assert helpers.filecopyto(source, target_dir / "b.txt") == str(target_dir / "b.txt")
    assert (target_dir / "b.txt").read_text() == "A"


def test_copytree2_merges_and_calls_back(helpers: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "keep.txt").write_text("new")
    (src / "sub" / "x.txt").write_text("x")
    (src / "skip.log").write_text("log")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    (dst / "other.txt").write_text("untouched")

    copied = helpers.copytree2(
        src,
        dst,
        ignore=lambda d, names: [n for n in names if n.endswith(".log")],
        onreplace=helpers.default_skip,
    )
    assert copied == [str(dst / "sub" / "x.txt")]
    assert (dst / "keep.txt").read_text() == "old"
    assert (dst / "other.txt").read_text() == "untouched"
    assert not (dst / "skip.log").exists()

    events: list[str] = []

    def oncopy(what: str, source: str, target: str) -> bool:
        events.append(what)
        return True

    helpers.copytree2(str(src), str(dst), oncopy=oncopy)  # default: overwrite
    assert (dst / "keep.txt").read_text() == "new"
    assert "overwrites" in events and "directory" in events


def test_copytree2_reports_every_failure(helpers: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in ("a", "b", "c"):
        (src / name).mkdir(parents=True)
        (src / name / "f.txt").write_text(name)
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "a").write_text("a file where a directory must go")
    (dst / "c").write_text("another one")
    with pytest.raises(shutil.Error) as caught:
        helpers.copytree2(src, dst)
    assert [Path(problem[0]).name for problem in caught.value.args[0]] == ["a", "c"]
    assert (dst / "b" / "f.txt").read_text() == "b"  # the rest was copied


def test_file_helpers(helpers: ModuleType, tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    assert helpers.mkdirs(deep) == str(deep)
    assert helpers.mkdirs(deep) == str(deep)  # no error when it exists
    assert helpers.isdir(deep) and helpers.dir_is_empty(deep)
    helpers.ensure_dir(str(tmp_path / "c" / "d" / "file.txt"))
    assert (tmp_path / "c" / "d").is_dir()
    (deep / "f").write_text("x")
    assert helpers.isfile(deep / "f") and not helpers.dir_is_empty(deep)
    helpers.remove_file(deep / "f")
    helpers.remove_file(deep / "f")  # missing: only logged
    assert not (deep / "f").exists()
    helpers.remove_tree(tmp_path / "a")
    helpers.remove_tree(tmp_path / "a")  # missing: errors ignored by default
    assert not (tmp_path / "a").exists()
    assert helpers.makepath("a", "b", "c") == os.path.join("a", "b", "c")
    assert helpers.makepath("c:", "wapt") == os.path.join("c:" + os.sep, "wapt")


def test_ini_helpers(helpers: ModuleType, tmp_path: Path) -> None:
    ini = str(tmp_path / "app.ini")
    helpers.inifile_writestring(ini, "global", "Server", "srv1")
    assert helpers.inifile_readstring(ini, "global", "Server") == "srv1"
    assert helpers.inifile_readstring(ini, "global", "missing", "dflt") == "dflt"
    assert helpers.inifile_hassection(ini, "global")
    assert helpers.inifile_hasoption(ini, "global", "Server")
    assert helpers.inifile_deleteoption(ini, "global", "Server")
    assert not helpers.inifile_hasoption(ini, "global", "Server")
    assert helpers.inifile_deletesection(ini, "global")
    assert not helpers.inifile_hassection(ini, "global")


def test_text_and_version_helpers(helpers: ModuleType) -> None:
    assert helpers.ensure_list("a, b,,c") == ["a", "b", "c"]
    assert helpers.ensure_list("a,,b", ignore_empty_args=False) == ["a", "", "b"]
    assert helpers.ensure_list(("a",)) == ["a"]
    assert helpers.ensure_list(None) == [] and helpers.ensure_list(None, allow_none=True) is None
    assert helpers.ensure_unicode(b"caf\xc3\xa9") == "café"
    assert helpers.ensure_unicode(ValueError("bad")) == "ValueError: bad"
    assert helpers.ensure_unicode(None) is None
    assert len(helpers.currentdate()) == 8 and helpers.currentdate().isdigit()
    assert len(helpers.currentdatetime()) == 15 and helpers.currentdatetime()[8] == "-"
    version = helpers.Version
    assert version("1.10") > version("1.9")
    assert version("1.0") < version("1.0.0")
    assert version("1.2.3", 2) == version("1.2") == "1.2"
    assert version("2.0rc1") < "2.0rc2"


def test_system_helpers(helpers: ModuleType) -> None:
    assert helpers.get_os_name() in ("Linux", "Darwin", "Windows")
    assert isinstance(helpers.get_os_version(), str)
    assert helpers.get_computername() and "." not in helpers.get_computername()
    assert helpers.user_home_directory() == os.path.expanduser("~")
    assert helpers.get_file_properties("/bin/sh") == {}
    softwares = helpers.installed_softwares()
    assert isinstance(softwares, list)
    if shutil.which("dpkg-query"):
        names = {entry["name"] for entry in softwares}
        assert "coreutils" in names
        assert helpers.installed_softwares("coreutils")[0]["version"]
        assert helpers.installed_softwares(name="^no-such-package$") == []


@linux_only
def test_killalltasks_kills_by_name_with_children(helpers: ModuleType, tmp_path: Path) -> None:
    tag = f"{os.getpid() % 100000:05d}"
    parent_name, child_name = f"ctpar{tag}", f"ctkid{tag}"
    parent_exe, child_exe = tmp_path / parent_name, tmp_path / child_name
    parent_exe.symlink_to(os.path.realpath(sys.executable))
    child_exe.symlink_to(shutil.which("sleep") or "/bin/sleep")
    code = f"import subprocess, time; subprocess.Popen([{str(child_exe)!r}, '30']); time.sleep(30)"
    parent = subprocess.Popen([str(parent_exe), "-I", "-c", code])
    try:
        deadline = time.monotonic() + 5
        while not helpers.isrunning(child_name):
            assert time.monotonic() < deadline, "the child process never started"
            time.sleep(0.02)
        (child,) = helpers.find_processes(child_name + ".exe")  # .exe is optional
        assert child.ppid == parent.pid

        killed = helpers.killalltasks([parent_name.upper()])
        assert killed == [(parent.pid, parent_name)]
        assert parent.wait(5) == -9
        assert wait_until_gone(child.pid)
        assert not helpers.isrunning(parent_name)
        assert helpers.killalltasks(parent_name) == []
    finally:
        parent.kill()
        parent.wait()


@linux_only
def test_find_processes_spares_its_own_process(helpers: ModuleType) -> None:
    name = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert any(p.pid == os.getpid() and p.name == name for p in helpers._processes())
    assert os.getpid() not in [p.pid for p in helpers.find_processes(name)]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("registry_readstring", ("HKEY_LOCAL_MACHINE", r"SOFTWARE\Acme", "Version")),
        ("registry_set", ("HKEY_LOCAL_MACHINE", r"SOFTWARE\Acme", "Version", "1")),
        ("install_msi_if_needed", ("acme.msi",)),
        ("install_exe_if_needed", ("acme.exe", "/S")),
        ("create_desktop_shortcut", ("Acme", "c:/acme.exe")),
        ("remove_desktop_shortcut", ("Acme",)),
        ("uninstall_key_exists", ("{GUID}",)),
        ("register_uninstall", ("acme", "uninstall.exe")),
        ("unregister_uninstall", ("acme",)),
        ("add_shutdown_script", ("c:/x.cmd", "")),
        ("programfiles", ()),
        ("programfiles32", ()),
        ("system32", ()),
    ],
)
def test_windows_only_helpers_raise_a_clear_error(
    helpers: ModuleType, name: str, args: tuple[Any, ...]
) -> None:
    if sys.platform == "win32":
        pytest.skip("the message differs on Windows")
    resolved = [getattr(helpers, a) if a.startswith("HKEY_") else a for a in args]
    with pytest.raises(helpers.UnsupportedOnThisSystemError) as caught:
        getattr(helpers, name)(*resolved)
    assert isinstance(caught.value, NotImplementedError)
    system = {"linux": "Linux", "darwin": "macOS"}[sys.platform]
    assert str(caught.value) == f"{name} is Windows-only; this system is {system}"


def test_star_import_gives_what_scripts_expect(helpers: ModuleType) -> None:
    exported = set(helpers.__all__)
    assert {"os", "shutil", "glob", "sys", "run", "error", "PackageEntry"} <= exported
    assert "control" not in exported  # the runner's global must not be shadowed
    assert not any(name.startswith("_") for name in exported)
    assert all(hasattr(helpers, name) for name in exported)


def test_setuphelpers_imports_with_only_the_standard_library(tmp_path: Path) -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import setuphelpers; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('agent_bridge', 'wapt', 'comptoir', 'flask')); print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(RUNTIME_DIR)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "[]\n"
