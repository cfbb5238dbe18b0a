"""The shutdown window: a pywebview (Qt) window showing the shutdown run, in French or English.

The page is `templates/shutdown/window.html`, rendered with Jinja2 and the portal's translations
(`portal/translations`, the same catalog `make translations` maintains), so every string it shows
is translated and tested like the portal's. The run itself (`agent_bridge.shutdown`) works in
pywebview's worker thread and calls `WindowUI`, which pushes state into the page with
`evaluate_js`; the page's buttons call back `choose` through pywebview's JS API.

The window has no frame, hence no close button: "Postpone" is the only way to put the work off,
and it is offered only when the policy allows it. Closing the window by other means (Alt+F4)
counts as "Postpone" when allowed and is refused otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from babel.dates import format_datetime
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader, select_autoescape

from agent_bridge.shutdown import Choice, InstallProgress, Plan, Report
from portal import PROJECT_ROOT
from portal.i18n import TRANSLATIONS_DIR

__all__ = ["LANGUAGES", "WindowUI", "display_available", "render_page", "run_with_window"]

LANGUAGES: Final = ("fr", "en")
TEMPLATE: Final = "shutdown/window.html"
LOAD_TIMEOUT: Final = 30.0
T = TypeVar("T")


def display_available() -> bool:
    """True when a window can be shown: Windows, a display on Linux, or Qt's offscreen platform."""
    if sys.platform == "win32":
        return True
    return bool(
        os.environ.get("DISPLAY")
        or os.environ.get("WAYLAND_DISPLAY")
        or os.environ.get("QT_QPA_PLATFORM") == "offscreen"
    )


def _environment(lang: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(PROJECT_ROOT / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
    )
    translations = Translations.load(str(TRANSLATIONS_DIR), [lang], domain="messages")
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    return env


def render_page(plan: Plan | None, lang: str) -> str:
    """The window's page for `plan` (None: "checking what is pending") in `lang`.

    Raises:
        ValueError: `lang` is not one of `LANGUAGES`.
    """
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: expected one of {', '.join(LANGUAGES)}")
    deadline_text = ""
    if plan is not None and plan.deadline is not None:
        local = plan.deadline.astimezone(datetime.now().astimezone().tzinfo)
        deadline_text = str(format_datetime(local, format="medium", locale=lang))
    return (
        _environment(lang)
        .get_template(TEMPLATE)
        .render(plan=plan, lang=lang, deadline_text=deadline_text)
    )


class _Api:
    """What the page may call (pywebview exposes public methods): the user's choice only."""

    def __init__(self, on_choice: Callable[[str], None]) -> None:
        self._on_choice = on_choice

    def choose(self, choice: str) -> None:
        self._on_choice(choice)


class WindowUI:
    """A `ShutdownUI` in a pywebview window (see `run_with_window`)."""

    def __init__(self, lang: str, *, linger: float = 3.0) -> None:
        self.lang = lang
        self.linger = linger
        self.window: Any = None
        self.plan: Plan | None = None
        self._choice: Choice | None = None
        self._loaded = threading.Event()
        self._lock = threading.Lock()
        self.api = _Api(self._chosen)

    # pywebview callbacks ----------------------------------------------------------------------

    def _chosen(self, choice: str) -> None:
        with self._lock:
            if choice == "install" or (
                choice == "postpone" and self.plan is not None and self.plan.can_postpone
            ):
                self._choice = choice  # type: ignore[assignment]

    def _on_loaded(self) -> None:
        self._loaded.set()

    def _on_closing(self) -> bool:
        """Closing counts as "Postpone" when allowed; the window itself never closes this way."""
        self._chosen("postpone")
        return False

    def _load(self, html: str) -> None:
        self._loaded.clear()
        self.window.load_html(html)
        deadline = time.monotonic() + LOAD_TIMEOUT
        # `loaded` may still be the previous page's: wait for this page's countdown to exist
        while not (
            self._loaded.wait(max(0.0, deadline - time.monotonic()))
            and self.window.evaluate_js("document.getElementById('countdown') !== null")
        ):
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"the shutdown window did not load its page in {LOAD_TIMEOUT:g} s"
                )
            time.sleep(0.05)

    def _js(self, function: str, value: object) -> None:
        self.window.evaluate_js(
            f"window.comptoir && window.comptoir.{function}({json.dumps(value)})"
        )

    # ShutdownUI -------------------------------------------------------------------------------

    def show(self, plan: Plan) -> None:
        self.plan = plan
        self._load(render_page(plan, self.lang))

    def countdown(self, remaining: float) -> Choice | None:
        self._js("countdown", remaining)
        with self._lock:
            return self._choice

    def closing(self, apps: Sequence[str]) -> None:
        self._js("closing", list(apps))

    def installing(self, progress: InstallProgress) -> None:
        self._js(
            "progress",
            {"percent": progress.percent, "step": progress.step, "items": progress.items},
        )

    def finished(self, report: Report) -> None:
        if self.plan is None:
            return
        data = report.as_dict()
        self._js(
            "finished", {k: data[k] for k in ("outcome", "done", "failed", "not_done", "postponed")}
        )
        threading.Event().wait(self.linger)


def run_with_window(work: Callable[[WindowUI], T], *, lang: str, linger: float = 3.0) -> T:
    """Open the window, run `work(ui)` in pywebview's worker thread, close it, return the result.

    Blocks the calling (main) thread while the window is open. Qt's WebEngine refuses to run as
    root with its sandbox; the page is our own and loads nothing from anywhere, so as root the
    sandbox is turned off (`QTWEBENGINE_DISABLE_SANDBOX`).

    Raises:
        whatever `work` raised; RuntimeError if the window could not be shown.
    """
    import webview

    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    ui = WindowUI(lang, linger=linger)
    window = webview.create_window(
        "Comptoir",
        html=render_page(None, lang),
        js_api=ui.api,
        width=720,
        height=560,
        frameless=True,
        easy_drag=False,
        on_top=True,
        focus=True,
    )
    if window is None:
        raise RuntimeError("the shutdown window could not be created")
    ui.window = window
    window.events.loaded += ui._on_loaded
    window.events.closing += ui._on_closing
    outcome: dict[str, Any] = {}

    def worker() -> None:
        try:
            if not ui._loaded.wait(LOAD_TIMEOUT):
                raise RuntimeError("the shutdown window did not open")
            outcome["result"] = work(ui)
        except BaseException as e:  # handed back to the caller below
            outcome["error"] = e
        finally:
            window.events.closing -= ui._on_closing
            window.destroy()

    webview.start(worker, gui="qt")
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise RuntimeError("the shutdown window closed before the run ended")
    result: T = outcome["result"]
    return result
