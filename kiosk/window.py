"""The kiosk window: the portal in pywebview's Qt backend, locked to the portal's origin.

`KioskWindow.run` opens the window and blocks until it closes. In kiosk mode
(`KioskOptions.locked`) it installs, on the GUI thread before the window shows:

- a request interceptor on the window's web profile that blocks every request to another
  origin, whatever asked for it (a link, a form, a redirect, an image, a new window);
- a handler of the page's navigation requests that refuses a page outside the origin, so the
  window stays on the page the user was on rather than showing an error;
- a new-window handler: `target=_blank` and `window.open` stay in this window for the portal's
  own pages and go nowhere for others (pywebview would hand them to the system browser, a way
  out of the kiosk);
- no context menu and no developer tools; the window manager's close is ignored unless
  `allow_close`.

Each page then gets `policy.idle_script` (as a Qt page script, in a world of its own), which
signs a forgotten session out. The other
methods (`evaluate`, `screenshot`, `current_url`, `load`, `close`) may be called from any
thread while the window runs. Qt is imported only when a window is made.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiosk.policy import KioskError, KioskOptions, Origin, idle_script

__all__ = ["KioskWindow", "prepare_qt_environment"]

log = logging.getLogger("comptoir.kiosk")


def prepare_qt_environment() -> None:
    """Environment QtWebEngine needs before it starts: no Chromium sandbox as root (it refuses
    to start otherwise); the offscreen platform when there is no display at all."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


class KioskWindow:
    """One window on the portal at `url`; `origin` (default: `url`'s) bounds where it goes."""

    def __init__(self, url: str, options: KioskOptions, *, origin: Origin | None = None) -> None:
        self.url = url
        self.options = options
        self.origin = origin or Origin.of(url)
        if not self.origin.allows(url):
            raise KioskError(f"{url}: not on the portal's origin {self.origin.url}")
        #: URLs the window refused, in order (also logged)
        self.refused: list[str] = []
        #: set at every page load, once the kiosk's script runs in the page
        self.page_ready = threading.Event()
        self.loads = 0
        self._refused_lock = threading.Lock()
        self._closing_allowed = options.allow_close
        self._window: Any = None
        self._bridge: Any = None
        self._guards: list[Any] = []  # Qt objects that must live as long as the window

    # -- running -----------------------------------------------------------------------------

    def run(self, on_start: Callable[[KioskWindow], None] | None = None) -> None:
        """Show the window and block until it is closed. `on_start` runs in a thread of its
        own once the GUI loop runs (tests and `--check` drive the window from there).

        Raises:
            KioskError: pywebview or its Qt backend is not installed.
        """
        prepare_qt_environment()
        try:
            import qtpy  # noqa: F401 (pywebview's Qt binding layer; fails early if absent)
            import webview
        except ImportError as e:
            raise KioskError(
                f"the kiosk window needs pywebview's Qt backend (pip install 'comptoir[kiosk]'): "
                f"{e}"
            ) from e
        if self.options.locked:
            # Never hand a link to the system browser: the new-window handler decides instead.
            webview.settings["OPEN_EXTERNAL_LINKS_IN_BROWSER"] = False
            webview.settings["ALLOW_FILE_URLS"] = False
        window: Any = webview.create_window(
            self.options.title,
            self.url,
            width=self.options.width,
            height=self.options.height,
            fullscreen=self.options.fullscreen,
            text_select=True,
        )
        self._window = window
        window.events.before_show += self._install_guards
        window.events.closing += self._on_closing
        webview.start(
            (lambda: on_start(self)) if on_start is not None else None,
            gui="qt",
            debug=False,
            private_mode=True,
        )

    # -- from any thread ---------------------------------------------------------------------

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for a page to be loaded with the kiosk's script in it.

        Raises:
            KioskError: no page was ready within `timeout` seconds.
        """
        if not self.page_ready.wait(timeout):
            raise KioskError(f"no page loaded within {timeout:g} s ({self.url})")

    def evaluate(self, script: str, timeout: float = 10.0) -> Any:
        """Run `script` in the page (its main world) and return its value.

        Qt's `runJavaScript`, not pywebview's `evaluate_js`: pywebview wraps scripts in
        `eval`, which the portal's Content-Security-Policy forbids.

        Raises:
            KioskError: no answer within `timeout` seconds.
        """
        reply = _Reply()
        self._bridge.run_js.emit(script, reply)
        if not reply.wait(timeout):
            raise KioskError(f"the page did not answer a script within {timeout:g} s")
        return reply.value

    def current_url(self) -> str | None:
        url = self._window.get_current_url()
        return str(url) if url is not None else None

    def load(self, url: str) -> None:
        """Show `url` (refused like a link if it is not on the portal's origin)."""
        self.page_ready.clear()
        self._window.load_url(url)

    def screenshot(self, path: Path, timeout: float = 10.0) -> Path:
        """Save what the window shows as a PNG (Qt's own rendering of the window).

        Raises:
            KioskError: the window could not be grabbed in time.
        """
        reply = _Reply()
        self._bridge.grab.emit(str(path), reply)
        if not reply.wait(timeout) or reply.value is not True:
            raise KioskError(f"{path}: the window could not be saved as an image")
        return path

    def painted(self, timeout: float = 10.0) -> bool:
        """True once the window's image is more than one flat colour (the page is drawn)."""
        deadline = time.monotonic() + timeout
        while True:
            reply = _Reply()
            self._bridge.measure.emit(reply)
            if reply.wait(max(0.1, deadline - time.monotonic())) and reply.value > 8:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def request_close(self) -> None:
        """Ask the window to close as the window manager does (Alt+F4, the title bar's cross):
        refused when `allow_close` is off."""
        self._bridge.close.emit()

    def close(self) -> None:
        """Close the window, even when closing is disabled for its user."""
        self._closing_allowed = True
        self._window.destroy()

    # -- pywebview events --------------------------------------------------------------------

    def _refuse(self, url: str, why: str) -> None:
        with self._refused_lock:
            self.refused.append(url)
        log.warning("kiosk: refused %s (%s): not on %s", url[:300], why, self.origin.url)

    def _on_closing(self) -> bool:
        # Runs on the GUI thread; False cancels the close.
        return self._closing_allowed

    def _on_load_finished(self, ok: bool) -> None:
        # GUI thread. The kiosk's script is already in the page (injected at DocumentReady).
        self.loads += 1
        self.page_ready.set()

    def _install_guards(self) -> None:
        """On the GUI thread, before the window shows: the guards the module doc lists."""
        from qtpy import QtCore

        native = self._window.native  # pywebview's BrowserView (a QMainWindow)
        view = native.webview
        page = view.page()
        bridge = _make_bridge(native)
        self._bridge = bridge
        self._guards.append(bridge)
        page.scripts().insert(
            _page_script(idle_script(self.options.idle_timeout, self.options.locked))
        )
        page.loadFinished.connect(self._on_load_finished)
        if not self.options.locked:
            return
        view.setContextMenuPolicy(QtCore.Qt.ContextMenuPolicy.NoContextMenu)
        interceptor = _make_interceptor(self.origin, self._refuse)
        native.profile.setUrlRequestInterceptor(interceptor)
        self._guards.append(interceptor)

        def on_navigation(request: Any) -> None:
            url = request.url().toString()
            if not self.origin.allows(url):
                request.reject()
                self._refuse(url, "navigation")

        page.navigationRequested.connect(on_navigation, QtCore.Qt.ConnectionType.DirectConnection)
        self._guards.append(on_navigation)
        handler = _make_new_window_page(page.profile(), view, self.origin, self._refuse)
        page.nav_handler = handler  # what pywebview's createWindow() hands to Qt
        self._guards.append(handler)


class _Reply:
    """A value the GUI thread hands to a thread that waits for it."""

    def __init__(self) -> None:
        self.value: Any = None
        self._done = threading.Event()

    def __call__(self, value: Any) -> None:
        self.value = value
        self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)


# --- Qt classes, defined once Qt is imported ------------------------------------------------


def _make_bridge(native: Any) -> Any:
    """A QObject living on the GUI thread that grabs the window for other threads."""
    from qtpy import QtCore

    class Bridge(QtCore.QObject):
        grab = QtCore.Signal(str, object)  # type: ignore[attr-defined]
        measure = QtCore.Signal(object)  # type: ignore[attr-defined]
        run_js = QtCore.Signal(str, object)  # type: ignore[attr-defined]
        close = QtCore.Signal()  # type: ignore[attr-defined]

        def __init__(self) -> None:
            super().__init__()
            queued = QtCore.Qt.ConnectionType.QueuedConnection
            self.grab.connect(self._grab, queued)
            self.measure.connect(self._measure, queued)
            self.run_js.connect(self._run_js, queued)
            self.close.connect(native.close, queued)

        def _run_js(self, script: str, reply: Callable[[Any], Any]) -> None:
            native.webview.page().runJavaScript(script, 0, reply)

        def _grab(self, path: str, reply: Callable[[bool], Any]) -> None:
            reply(bool(native.grab().save(path, "PNG")))

        def _measure(self, reply: Callable[[int], Any]) -> None:
            image = native.grab().toImage()
            width, height = image.width(), image.height()
            colours = {
                image.pixel(x * width // 24, y * height // 24)
                for x in range(24)
                for y in range(24)
                if width and height
            }
            reply(len(colours))

    return Bridge()


def _page_script(source: str) -> Any:
    """`source` as a script Qt injects into every page of the window, in a world of its own
    (the page's scripts cannot see or undo it), once the document is parsed."""
    from qtpy.QtWebEngineCore import QWebEngineScript

    script = QWebEngineScript()
    script.setName("comptoir-kiosk")
    script.setSourceCode(source)
    script.setInjectionPoint(QWebEngineScript.InjectionPoint.DocumentReady)
    script.setWorldId(QWebEngineScript.ScriptWorldId.ApplicationWorld)
    script.setRunsOnSubFrames(False)
    return script


def _make_interceptor(origin: Origin, refuse: Callable[[str, str], None]) -> Any:
    from qtpy.QtWebEngineCore import QWebEngineUrlRequestInterceptor

    class Interceptor(QWebEngineUrlRequestInterceptor):
        """Blocks every request outside the origin (runs on Qt's IO thread: never raise)."""

        def interceptRequest(self, info: Any) -> None:
            try:
                url = info.requestUrl().toString()
                if not origin.allows(url):
                    info.block(True)
                    refuse(url, "request")
            except Exception:  # an exception here would abort the process (PyQt6)
                info.block(True)

    return Interceptor()


def _make_new_window_page(
    profile: Any, view: Any, origin: Origin, refuse: Callable[[str, str], None]
) -> Any:
    from qtpy import QtCore
    from qtpy.QtWebEngineCore import QWebEnginePage

    class NewWindowPage(QWebEnginePage):
        """Where a new window's first navigation lands: shown in the kiosk's own window if it is
        the portal's, refused otherwise; no second window ever opens."""

        def acceptNavigationRequest(self, url: Any, kind: Any, main_frame: bool) -> bool:
            try:
                text = url.toString()
                if origin.allows(text):
                    view.setUrl(QtCore.QUrl(text))
                else:
                    refuse(text, "new window")
            except Exception:  # never raise into Qt
                log.exception("kiosk: new window handler")
            return False

    return NewWindowPage(profile)
