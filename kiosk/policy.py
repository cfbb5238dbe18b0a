"""What the kiosk window allows: its origin, its options, and the script that watches idleness.

Pure code, no Qt: `Origin` decides which URLs belong to the portal (same scheme, host and
port, and nothing else: another port of 127.0.0.1 is another site); `KioskOptions` holds the
window's settings, checked once; `idle_script` is the JavaScript the window puts in every page
to sign a forgotten session out. `kiosk.window` applies them to a real window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = ["KioskError", "KioskOptions", "Origin", "idle_script"]

#: URLs a page may use without a network request of its own (htmx and the portal use none of
#: them today; Qt's own error pages are `chrome-error:`, never loaded on purpose)
_LOCAL_SCHEMES: Final = frozenset({"data", "blob", "about"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class KioskError(Exception):
    """The kiosk cannot start as asked; the message names what is wrong and why."""


@dataclass(frozen=True)
class Origin:
    """The portal's origin (scheme, host, port): the only site the window may show."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of `url`.

        Raises:
            KioskError: `url` is not an absolute http(s) URL with a host.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise KioskError(f"{url!r}: the portal's address must be an http(s) URL with a host")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as e:
            raise KioskError(f"{url!r}: bad port: {e}") from e
        return cls(scheme, parts.hostname.lower(), port)

    @property
    def url(self) -> str:
        """The origin's root URL, with a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def allows(self, url: str) -> bool:
        """True when `url` is on this origin (or a local `data:`/`blob:`/`about:` URL).

        Anything unparsable, another scheme (`file:`, `javascript:`, `mailto:`…), another host
        or another port is refused. `about:blank` is the empty page Qt starts with.
        """
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme in _LOCAL_SCHEMES:
                return scheme != "about" or url in ("about:blank", "about:srcdoc")
            if scheme != self.scheme or not parts.hostname:
                return False
            port = parts.port or _DEFAULT_PORTS[scheme]
        except (ValueError, KeyError):
            return False
        if parts.username is not None or parts.password is not None:
            return False  # http://127.0.0.1:8080@elsewhere/ and friends
        return parts.hostname.lower() == self.host and port == self.port


@dataclass(frozen=True)
class KioskOptions:
    """How the window behaves; `docs/kiosk.md` describes each option.

    `locked` is kiosk mode proper: no context menu, no developer tools, no page outside the
    portal's origin, no new windows, no system browser. `allow_close` False ignores the
    window manager's close (Alt+F4 included). `idle_timeout` (seconds) signs a user out when
    nobody touched the keyboard, mouse or screen for that long; 0 never.
    """

    title: str = "Comptoir"
    fullscreen: bool = False
    locked: bool = True
    allow_close: bool = True
    idle_timeout: float = 300.0
    width: int = 1024
    height: int = 768

    def __post_init__(self) -> None:
        problems = []
        if not (self.idle_timeout >= 0 and self.idle_timeout < 7 * 86400):
            problems.append(f"idle timeout {self.idle_timeout!r}: seconds, from 0 to a week")
        if not (320 <= self.width <= 16384 and 240 <= self.height <= 16384):
            problems.append(f"window size {self.width}x{self.height}: at least 320x240")
        if not self.allow_close and not self.locked:
            problems.append("a window that cannot be closed must be locked (kiosk mode)")
        if problems:
            raise KioskError("; ".join(problems))


def idle_script(idle_timeout: float, locked: bool = True) -> str:
    """JavaScript for every page: note the user's last input and, after `idle_timeout`
    seconds without any, submit the page's sign-out form (the portal's own, with its CSRF
    token), which lands on the login page with the portal's "signed out" message.

    `locked`, it also refuses the context menu (the window's own is already off in kiosk
    mode). It runs once per page, injected by Qt, not by the page: the portal's CSP stays as
    strict as it is (no inline script, no eval).
    """
    timeout_ms = round(idle_timeout * 1000)
    return (
        "(function () {\n"
        "  if (window.__comptoirKiosk) { return true; }\n"
        "  window.__comptoirKiosk = true;\n"
        "  var last = Date.now();\n"
        f"  var timeout = {json.dumps(timeout_ms)};\n"
        "  var seen = function () { last = Date.now(); };\n"
        "  ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'input']"
        ".forEach(function (name) {\n"
        "    document.addEventListener(name, seen, {capture: true, passive: true});\n"
        "  });\n"
        + (
            "  document.addEventListener('contextmenu', function (e) { e.preventDefault(); }, "
            "true);\n"
            if locked
            else ""
        )
        + "  if (timeout > 0) {\n"
        "    window.setInterval(function () {\n"
        "      if (Date.now() - last < timeout) { return; }\n"
        "      var form = document.querySelector('form.logout');\n"
        "      if (form) { last = Date.now(); form.submit(); }\n"
        "    }, Math.min(1000, timeout));\n"
        "  }\n"
        "  return true;\n"
        "})();"
    )
