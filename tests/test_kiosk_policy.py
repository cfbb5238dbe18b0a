"""The kiosk's rules without a window: which URLs are the portal's, the window options, the
idle script, and the executable acting as the interpreter of packages' setup.py."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from agent_bridge.agent.runner import RunResult, run_setup
from kiosk.frozen import interpreter_request
from kiosk.launcher import PortalStatus, first_page
from kiosk.policy import KioskError, KioskOptions, Origin, idle_script

ROOT = Path(__file__).resolve().parents[1]
PORTAL = Origin.of("http://127.0.0.1:8080/login")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/",
        "http://127.0.0.1:8080/catalog/results?q=atlas",
        "HTTP://127.0.0.1:8080/static/css/portal.css",
        "data:image/png;base64,iVBORw0KGgo=",
        "blob:http://127.0.0.1:8080/5b6c",
        "about:blank",
    ],
)
def test_the_portal_and_local_urls_are_allowed(url: str) -> None:
    assert PORTAL.allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/",  # another port is another site
        "http://127.0.0.1/",
        "https://127.0.0.1:8080/",
        "http://localhost:8080/",  # the same machine under another name: not the same origin
        "http://127.0.0.2:8080/",
        "http://example.org/",
        "http://127.0.0.1:8080@evil.example/",
        "http://user:pw@127.0.0.1:8080/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "mailto:someone@example.org",
        "about:config",
        "chrome://settings",
        "http://127.0.0.1:99999/",
        "http:///nohost",
        "",
        "not a url",
    ],
)
def test_everything_else_is_refused(url: str) -> None:
    assert not PORTAL.allows(url)


def test_origin_of_bad_addresses_says_why() -> None:
    for bad in ("ftp://127.0.0.1/", "127.0.0.1:8080", "http://", "http://127.0.0.1:x/"):
        with pytest.raises(KioskError, match=r"portal's address|bad port"):
            Origin.of(bad)
    assert Origin.of("https://portal.example:443/x").url == "https://portal.example:443/"
    assert Origin.of("http://[::1]:8080/").url == "http://[::1]:8080/"


def test_window_options_are_checked() -> None:
    assert KioskOptions().locked and KioskOptions().allow_close
    with pytest.raises(KioskError, match="must be locked"):
        KioskOptions(locked=False, allow_close=False)
    with pytest.raises(KioskError, match="idle timeout"):
        KioskOptions(idle_timeout=-1)
    with pytest.raises(KioskError, match="window size"):
        KioskOptions(width=100)


def test_idle_script_signs_out_through_the_portals_form() -> None:
    script = idle_script(90)
    assert "var timeout = 90000;" in script and "form.logout" in script
    assert "form.submit()" in script and "contextmenu" in script
    assert "eval(" not in script  # the portal's CSP forbids it
    assert "contextmenu" not in idle_script(90, locked=False)
    assert "var timeout = 0;" in idle_script(0)


def test_first_page_is_login_or_the_unreachable_screen() -> None:
    up, down = PortalStatus(True, True), PortalStatus(True, False)
    assert first_page("http://127.0.0.1:8080/x", up) == "http://127.0.0.1:8080/login"
    assert first_page("http://127.0.0.1:8080", down) == "http://127.0.0.1:8080/unavailable"
    assert first_page("http://127.0.0.1:8080/", up, "technician/") == (
        "http://127.0.0.1:8080/technician/"
    )


# --- the executable as the setup.py interpreter ---------------------------------------------


def test_only_the_runners_command_line_is_an_interpreter_request() -> None:
    runner = ["-I", "-S", "-B", "-u", "-X", "utf8", "-c", "print(1)", "/tmp/run.json"]
    assert interpreter_request(runner) == (
        ["-I", "-S", "-B", "-u", "-Xutf8"],
        "print(1)",
        ["/tmp/run.json"],
    )
    assert interpreter_request(["-c", "pass"]) == ([], "pass", [])
    for other in (
        [],
        ["--bundle", "/media/usb"],
        ["--check"],
        ["-m", "http.server"],
        ["-I", "script.py"],
        ["-c"],
        ["-X"],
    ):
        assert interpreter_request(other) is None, other


@pytest.fixture
def kiosk_as_python(tmp_path: Path) -> Path:
    """An executable that starts the kiosk's entry point, as the frozen build does."""
    wrapper = tmp_path / "comptoir-kiosk"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec "{sys.executable}" -c "import sys; sys.path.insert(0, {str(ROOT)!r}); '
        'from kiosk.entry import main; sys.exit(main())" "$@"\n',
        "utf-8",
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def run_through(
    wrapper: Path, tmp_path: Path, setup: str, env: dict[str, str] | None = None
) -> RunResult:
    """`install()` of a package whose setup.py is `setup`, run by the agent's runner with
    `wrapper` as the interpreter."""
    directory = tmp_path / "pkg"
    directory.mkdir(exist_ok=True)
    (directory / "setup.py").write_text(setup, "utf-8")
    return run_setup(
        directory,
        "install",
        control={"package": "tis-frozen", "version": "1-1"},
        persistent_dir=None,
        timeout=30,
        env=env,
        python=str(wrapper),
    )


def test_the_runner_runs_setup_py_through_the_kiosk_entry(
    kiosk_as_python: Path, tmp_path: Path
) -> None:
    target = tmp_path / "installed"
    setup = (
        "import os, json, shutil\n"
        "def install():\n"
        "    print('installing', control['package'], 'é')\n"
        "    os.makedirs(os.environ['COMPTOIR_INSTALL_ROOT'], exist_ok=True)\n"
        "    with open(os.path.join(os.environ['COMPTOIR_INSTALL_ROOT'], 'ok'), 'w') as f:\n"
        "        json.dump({'argv0': __import__('sys').argv[0]}, f)\n"
    )
    result = run_through(kiosk_as_python, tmp_path, setup, {"COMPTOIR_INSTALL_ROOT": str(target)})
    assert result.ok, (result.error, result.output)
    assert "installing tis-frozen é" in result.output
    assert (target / "ok").read_text() == '{"argv0": "-c"}'


def test_failures_in_setup_py_come_back_through_the_kiosk_entry(
    kiosk_as_python: Path, tmp_path: Path
) -> None:
    raised = run_through(
        kiosk_as_python, tmp_path, "def install():\n    raise RuntimeError('boom')\n"
    )
    assert not raised.ok and raised.error == "install() raised RuntimeError: boom"
    assert raised.traceback is not None and "setup.py" in raised.traceback
    exited = run_through(kiosk_as_python, tmp_path, "import sys\ndef install():\n    sys.exit(3)\n")
    assert not exited.ok and exited.returncode == 3


def test_the_kiosk_entry_is_still_the_kiosk_for_other_command_lines(
    kiosk_as_python: Path,
) -> None:
    import subprocess

    run = subprocess.run(
        [str(kiosk_as_python), "--help"],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0 and b"comptoir-kiosk [OPTIONS]" in run.stdout
