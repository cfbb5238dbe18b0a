"""The shutdown window under Qt's offscreen platform, against the real agent.

Each scenario runs in its own Python process (`scenario` below), because Qt allows one
application per process: the window opens on the pending work, is screenshotted (the picture
must not be blank), and its buttons are pressed through `evaluate_js`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup

from agent_bridge.shutdown import PendingItem, Plan
from comptoir.shutdown_window import render_page
from tests.shutdown_harness import Machine, future, running_machine

ROOT = Path(__file__).resolve().parents[1]


def scenario(url: str, state_dir: str, lang: str, max_postpones: int, shot: str) -> None:
    """Run the shutdown policy in the window; press Postpone if offered; print what was seen."""
    from qtpy import QtCore, QtGui

    from agent_bridge.client import AgentClient
    from agent_bridge.shutdown import PostponeStore, ShutdownPolicy, run_shutdown
    from comptoir.shutdown_window import WindowUI, run_with_window

    class Grabber(QtCore.QObject):  # type: ignore[misc]
        request = QtCore.Signal(object, str)

        def __init__(self) -> None:
            super().__init__()
            self.done = threading.Event()
            self.request.connect(self._grab, QtCore.Qt.ConnectionType.QueuedConnection)

        def _grab(self, window: Any, path: str) -> None:  # in the GUI thread
            window.native.grab().save(path)
            self.done.set()

    grabber = Grabber()
    seen: dict[str, Any] = {}

    def work(ui: WindowUI) -> Any:
        original = ui.countdown

        def countdown(remaining: float) -> Any:
            if "title" not in seen:
                js = ui.window.evaluate_js
                seen["title"] = js("document.querySelector('h1').textContent")
                seen["lang"] = js("document.documentElement.lang")
                seen["items"] = js(
                    "Array.from(document.querySelectorAll('#items li'))"
                    ".map(li => li.dataset.request)"
                )
                seen["postpone_button"] = js("document.getElementById('postpone') !== null")
                seen["info"] = js(
                    "(document.getElementById('postpone-info')"
                    " || document.getElementById('forced')).textContent.trim()"
                )
                for _ in range(25):  # until the page is painted
                    grabber.done.clear()
                    grabber.request.emit(ui.window, shot)
                    assert grabber.done.wait(20), "no screenshot"
                    if len(_colours(shot)) > 5:
                        break
                    time.sleep(0.2)
                if seen["postpone_button"]:
                    js("document.getElementById('postpone').click()")
                    seen["status_after_click"] = js("document.getElementById('status').textContent")
            return original(remaining)

        ui.countdown = countdown  # type: ignore[method-assign]
        report = run_shutdown(
            AgentClient(url),
            ShutdownPolicy(countdown=3, max_postpones=max_postpones, budget=120, grace=1),
            PostponeStore(Path(state_dir)),
            ui,
        )
        seen["final_status"] = ui.window.evaluate_js(
            "document.getElementById('status').textContent"
        )
        return report

    report = run_with_window(work, lang=lang, linger=0)
    image = QtGui.QImage(shot)
    colours = {
        image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)
    }
    seen.update(
        outcome=report.outcome,
        done=report.done,
        size=[image.width(), image.height()],
        colours=len(colours),
    )
    print("RESULT " + json.dumps(seen))


def _colours(path: str) -> set[int]:
    """The distinct colours of a grid of pixels: a blank picture has one."""
    from qtpy import QtGui

    image = QtGui.QImage(path)
    return {
        image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)
    }


def _run_scenario(machine: Machine, tmp_path: Path, lang: str, max_postpones: int) -> Any:
    shot = tmp_path / f"window-{lang}.png"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env.update(QT_QPA_PLATFORM="offscreen", QTWEBENGINE_DISABLE_SANDBOX="1")
    code = (
        "import sys; from tests.test_shutdown_window import scenario; "
        "scenario(*sys.argv[1:4], int(sys.argv[4]), sys.argv[5])"
    )
    args = [machine.client.base_url, str(tmp_path / "state"), lang, str(max_postpones), str(shot)]
    run = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout + run.stderr[-3000:]
    assert shot.stat().st_size > 1000
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Machine:
    with running_machine(tmp_path_factory.mktemp("shutdown-window")) as found:
        found.publish_host(at_shutdown="tis-quick", deadlines=f"tis-quick={future()}")
        yield found  # type: ignore[misc]


def test_the_page_escapes_package_text_and_speaks_both_languages() -> None:
    hostile = '<script>alert("x")</script>(=1)'
    plan = Plan(
        items=(PendingItem(hostile, "at_shutdown"),),
        deadline=datetime(2026, 12, 1, 18, tzinfo=UTC),
        postpones_used=3,
        postpones_left=0,
        can_postpone=False,
        forced_by="postpones",
        apps=('evil"><img src=x onerror=alert(1)>',),
        countdown=10,
    )
    for lang, words in (("fr", "Installer maintenant"), ("en", "Install now")):
        html = render_page(plan, lang)
        soup = BeautifulSoup(html, "html.parser")
        assert soup.html is not None and soup.html["lang"] == lang
        assert soup.select_one("#install-now").get_text() == words  # type: ignore[union-attr]
        assert soup.select_one("#postpone") is None
        assert "<script>alert" not in html and "<img src=x" not in html
        assert soup.select_one("#items li")["data-request"] == hostile  # type: ignore[index]
        assert soup.select("#apps li")[0].get_text() == 'evil"><img src=x onerror=alert(1)>'
        assert soup.select_one("[aria-live=polite]") is not None
    with pytest.raises(ValueError, match="language 'de'"):
        render_page(plan, "de")


@pytest.mark.slow
def test_the_window_counts_down_and_postpones(machine: Machine, tmp_path: Path) -> None:
    seen = _run_scenario(machine, tmp_path, "fr", max_postpones=2)
    assert seen["lang"] == "fr" and seen["title"] == "Installation de logiciels avant l’arrêt"
    assert seen["items"] == ["tis-quick(=1-1)"]
    assert seen["postpone_button"] is True
    assert "Vous pouvez encore reporter 2 fois." in seen["info"]
    assert "Date limite" in seen["info"]
    assert seen["status_after_click"] == "Reporté."
    assert seen["outcome"] == "postponed" and seen["final_status"] == "Installation reportée."
    assert seen["size"][0] >= 600 and seen["colours"] > 5, "a blank screenshot"
    assert not machine.is_installed("tis-quick")


@pytest.mark.slow
def test_without_postpones_there_is_no_postpone_button(machine: Machine, tmp_path: Path) -> None:
    seen = _run_scenario(machine, tmp_path, "en", max_postpones=0)
    assert seen["title"] == "Installing software before shutdown"
    assert seen["postpone_button"] is False
    assert "cannot be postponed again" in seen["info"]
    assert seen["outcome"] == "done" and seen["done"] == ["tis-quick(=1-1)"]
    assert seen["final_status"] == "Everything is installed."
    assert seen["colours"] > 5
    assert machine.is_installed("tis-quick")
