"""The kiosk window for real: pywebview's Qt backend with QtWebEngine, on Qt's offscreen platform
(no X server needed), in a child process per window (a Qt application runs once per process).

The window opens on the login page (its screenshot is checked: drawn, not blank), refuses
every way out of the portal's origin, cannot be closed by its user when so configured, and
signs a forgotten teacher out after the idle timeout. `comptoir kiosk --check` opens the
unreachable-agent screen when the agent is away, and the technician's PIN form offline; it
also draws under a real X server (Xvfb, Qt's xcb platform), checked by the window's own
grab and by ImageMagick's grab of the X screen when `import` is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiosk.launcher import serve_in_thread
from kiosk.offline import OfflineSite
from kiosk.policy import KioskOptions
from kiosk.window import KioskWindow
from portal import create_app
from tests.test_kiosk_common import Machine

pytest_plugins = ["tests.test_kiosk_common"]  # the shared kiosk fixtures

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COMPTOIR = Path(sys.executable).parent / "comptoir"


def qt_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPTOIR_", "DISPLAY"))}
    env.update(QT_QPA_PLATFORM="offscreen", QTWEBENGINE_DISABLE_SANDBOX="1", PYTHONPATH=str(ROOT))
    return env


def painted_png(path: Path) -> None:
    """A PNG of the window's size with more than a handful of colours (text, form, header)."""
    from PyQt6.QtGui import QImage

    image = QImage(str(path))
    assert not image.isNull() and (image.width(), image.height()) == (1024, 768)
    colours = {image.pixel(x, y) for x in range(0, 1024, 16) for y in range(0, 768, 16)}
    assert len(colours) > 8, f"{path} looks blank ({len(colours)} colours)"


# --- the scenario, run in the child process -------------------------------------------------


def wait_for(win: KioskWindow, script: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = win.evaluate(script)
        except Exception:  # the page is changing
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"never true: {script}")


def scenario(portal: str, elsewhere: str, shot: str, result: str) -> None:
    """Drive one window through the checks and write what was seen to `result` (JSON)."""
    seen: dict[str, Any] = {}
    options = KioskOptions(idle_timeout=2.0, allow_close=False)
    window = KioskWindow(portal + "login", options)

    def drive(win: KioskWindow) -> None:
        try:
            win.wait_ready(30)
            seen["login_form"] = win.evaluate(
                "!!document.querySelector('form input[name=username]')"
            )
            seen["painted"] = win.painted(10)
            win.screenshot(Path(shot))
            # ways out: a link, a new window, window.open, a form, a redirect through the portal
            win.evaluate(
                f"var a = document.createElement('a'); a.href = {json.dumps(elsewhere)};"
                "document.body.appendChild(a); a.click(); true"
            )
            win.evaluate(
                f"var b = document.createElement('a'); b.href = {json.dumps(elsewhere + 'blank')};"
                "b.target = '_blank'; document.body.appendChild(b); b.click(); true"
            )
            win.evaluate(f"window.open({json.dumps(elsewhere + 'popup')}); true")
            win.evaluate(
                "var f = document.createElement('form'); f.method = 'post';"
                f"f.action = {json.dumps(elsewhere + 'form')}; document.body.appendChild(f);"
                "f.submit(); true"
            )
            win.evaluate("fetch('https://example.org/x').catch(function () {}); true")
            time.sleep(1.5)
            seen["url_after_escapes"] = win.current_url()
            seen["refused"] = list(win.refused)
            # a same-origin link in a new window stays in this window
            win.evaluate(
                f"var c = document.createElement('a'); c.href = {json.dumps(portal + 'healthz')};"
                "c.target = '_blank'; document.body.appendChild(c); c.click(); true"
            )
            deadline = time.monotonic() + 10
            while "healthz" not in (win.current_url() or "") and time.monotonic() < deadline:
                time.sleep(0.1)
            seen["same_origin_new_window"] = win.current_url()
            # the user cannot close it
            win.request_close()
            time.sleep(0.5)
            seen["still_open_after_close"] = win.evaluate("document.readyState") is not None
            # sign in as a teacher, then leave the machine alone
            win.load(portal + "login")
            win.wait_ready(15)
            win.evaluate(
                "document.querySelector('#username').value = 'marie';"
                "document.querySelector('#password').value = 'demo';"
                "document.querySelector('form.stacked').submit(); true"
            )
            seen["signed_in"] = wait_for(
                win, "document.querySelector('form.logout') ? location.pathname : ''"
            )
            signed_in_at = time.monotonic()
            seen["after_idle"] = wait_for(
                win,
                "document.querySelector('#username') ? "
                "location.pathname + '|' + document.querySelector('.flashes').innerText : ''",
                timeout=20,
            )
            seen["idle_after_s"] = time.monotonic() - signed_in_at
        except Exception as e:
            seen["error"] = repr(e)
        finally:
            Path(result).write_text(json.dumps(seen), "utf-8")
            win.close()

    window.run(drive)


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture
def teacher_portal(offline_site: OfflineSite, machine: Machine, tmp_path: Path) -> Iterator[str]:
    """A teacher portal over the (offline site's) real agent, which knows marie/demo."""
    app = create_app(
        {
            "data_dir": str(tmp_path / "portal"),
            "agent_url": offline_site.agent_url.rstrip("/"),
            "idle_timeout": 2.0,
        }
    )
    with serve_in_thread(app) as served:
        yield served.url


def test_window_is_locked_to_the_portal_and_signs_idle_users_out(
    teacher_portal: str, tmp_path: Path
) -> None:
    reached: list[str] = []

    def elsewhere(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        reached.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<p id='escaped'>outside the portal</p>"]

    with serve_in_thread(elsewhere, name="elsewhere") as other:
        shot, result = tmp_path / "login.png", tmp_path / "result.json"
        code = (
            "from tests.test_kiosk_window import scenario; "
            f"scenario({teacher_portal!r}, {other.url!r}, {str(shot)!r}, {str(result)!r})"
        )
        run = subprocess.run(
            [sys.executable, "-c", code],
            env=qt_environment(),
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )
    seen = json.loads(result.read_text("utf-8"))
    assert "error" not in seen, (seen, run.stderr.decode()[-3000:])
    assert run.returncode == 0
    assert seen["login_form"] is True and seen["painted"] is True
    painted_png(shot)
    assert seen["url_after_escapes"] == teacher_portal + "login"
    assert reached == []  # nothing ever reached the other origin
    # Qt refused the navigations; the form and the fetch the portal's CSP stopped even before
    for path in ("", "blank", "popup"):
        assert other.url + path in seen["refused"], seen["refused"]
    assert seen["same_origin_new_window"] == teacher_portal + "healthz"
    assert seen["still_open_after_close"] is True
    assert seen["signed_in"] == "/"
    path, message = seen["after_idle"].split("|", 1)
    assert path == "/login" and "Déconnexion effectuée" in message
    assert 1.5 < seen["idle_after_s"] < 15


def check_unavailable_screen(env: dict[str, str], shot: Path) -> bytes:
    """`comptoir kiosk --check --screenshot` with no agent: ok, on the unreachable-agent
    screen, the screenshot painted. Returns the kiosk's stderr."""
    run = subprocess.run(
        [*UNAVAILABLE_KIOSK, "--check", "--screenshot", str(shot)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    outcome = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert outcome["ok"] is True and outcome["url"].endswith("/unavailable")
    painted_png(shot)
    return run.stderr


UNAVAILABLE_KIOSK = [str(COMPTOIR), "kiosk", "--agent-url", "http://127.0.0.1:9"]


def test_cli_check_shows_the_unreachable_agent_screen(tmp_path: Path) -> None:
    env = qt_environment() | {"COMPTOIR_PORTAL_DATA_DIR": str(tmp_path / "portal")}
    check_unavailable_screen(env, tmp_path / "unavailable.png")


def test_cli_check_opens_the_technician_pin_form_offline(machine: Machine, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            str(COMPTOIR),
            "kiosk",
            "--bundle",
            str(machine.stick.bundle),
            "--agent-config",
            str(machine.agent_config),
            "--data-dir",
            str(machine.data_dir),
            "--check",
            "--fullscreen",
            "--no-close",
        ],
        env=qt_environment(),
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    outcome = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert outcome["ok"] is True and outcome["url"].endswith("/technician/")
    assert outcome["painted_s"] < 10


# --- under a real X server -------------------------------------------------------------------


@pytest.fixture
def x_display() -> Iterator[str]:
    """`Xvfb -screen 0 1024x768x24 -nolisten tcp` on a display number it picks free itself
    (`-displayfd`, so parallel runs never collide); its name (":N"). Skips without Xvfb."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (make test installs it)")
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as announced:
            number = announced.readline().strip().decode()  # written once the server is ready
        assert number.isdigit(), f"Xvfb did not start (exit {process.poll()})"
        yield f":{number}"
    finally:
        process.terminate()
        process.wait(10)


def x_environment(display: str) -> dict[str, str]:
    """The kiosk's environment on a real X server: DISPLAY set, no QT_QPA_PLATFORM (xcb)."""
    env = {k: v for k, v in qt_environment().items() if k != "QT_QPA_PLATFORM"}
    return env | {"DISPLAY": display}


def grab_root(display: str, path: Path) -> bool:
    """`import -window root` (ImageMagick) of the whole screen; False if it failed."""
    grab = subprocess.run(
        ["import", "-display", display, "-window", "root", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return grab.returncode == 0 and path.is_file()


def test_cli_check_draws_the_window_on_a_real_x_server(x_display: str, tmp_path: Path) -> None:
    """The same `--check` as offscreen, but drawn by X (Qt's xcb platform) on Xvfb; and, with
    ImageMagick at hand, the X server's own picture of the screen shows the window painted."""
    env = x_environment(x_display) | {"COMPTOIR_PORTAL_DATA_DIR": str(tmp_path / "portal")}
    stderr = check_unavailable_screen(env, tmp_path / "x-window.png")
    assert b"offscreen" not in stderr, "Qt fell back to the offscreen platform"

    if shutil.which("import") is None:
        return  # no ImageMagick: the window's own grab above is the check
    # The window stays open (no --check) while the root window is grabbed until painted.
    root = tmp_path / "x-root.png"
    window = subprocess.Popen(
        UNAVAILABLE_KIOSK, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert window.poll() is None, f"the kiosk exited ({window.returncode})"
            if grab_root(x_display, root):
                try:
                    painted_png(root)
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
            assert time.monotonic() < deadline, "the screen was never painted"
            time.sleep(0.5)
    finally:
        window.terminate()
        try:
            window.wait(15)
        except subprocess.TimeoutExpired:
            window.kill()
            window.wait(10)
