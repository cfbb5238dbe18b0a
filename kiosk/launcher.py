"""Starting the kiosk: find or start the portal, choose the first page, open the window.

`comptoir kiosk` connects to the portal already running on this machine (its `/healthz`
answers as a Comptoir portal), or starts one in this process on a free loopback port. The
window opens on the login page, or on the unreachable-agent screen (`/unavailable`) when the
portal says the agent does not answer; that screen goes to the login page by itself once the
agent is back. `serve_in_thread` is also how the offline mode runs its agent.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kiosk.policy import KioskError, KioskOptions, Origin
from kiosk.window import KioskWindow

__all__ = [
    "PortalStatus",
    "Served",
    "first_page",
    "portal_status",
    "run_window",
    "serve_in_thread",
]

log = logging.getLogger("comptoir.kiosk")


@dataclass(frozen=True)
class PortalStatus:
    """What a portal's `/healthz` said: is it a Comptoir portal, and does its agent answer?"""

    portal: bool
    agent_reachable: bool


def portal_status(url: str, timeout: float = 3.0) -> PortalStatus:
    """Ask the portal at `url` for `/healthz` (a 503 still means the portal is up)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=timeout) as answer:  # noqa: S310 (http(s) checked by Origin)
            body = answer.read(65536)
    except urllib.error.HTTPError as e:
        body = e.read(65536) if e.code == 503 else b""
    except (OSError, ValueError):
        return PortalStatus(False, False)
    try:
        data = json.loads(body)
    except ValueError:
        return PortalStatus(False, False)
    if not isinstance(data, dict) or data.get("portal") != "ok":
        return PortalStatus(False, False)
    agent = data.get("agent")
    return PortalStatus(True, isinstance(agent, dict) and agent.get("reachable") is True)


def first_page(portal_url: str, status: PortalStatus, start: str = "login") -> str:
    """The page the window opens on: `start` (a path under the portal), or the
    unreachable-agent screen when the agent does not answer."""
    base = Origin.of(portal_url).url
    return base + ("unavailable" if not status.agent_reachable else start.lstrip("/"))


@dataclass
class Served:
    """A WSGI app served by waitress on 127.0.0.1 in a daemon thread."""

    url: str
    port: int
    close: Callable[[], None]


@contextmanager
def serve_in_thread(app: Any, *, threads: int = 8, name: str = "portal") -> Iterator[Served]:
    """Serve `app` on a free loopback port until the block ends.

    Raises:
        KioskError: no loopback port could be bound.
    """
    from waitress.server import create_server

    try:
        server = create_server(app, host="127.0.0.1", port=0, threads=threads, ident=name)
    except OSError as e:
        raise KioskError(f"cannot listen on 127.0.0.1 for the {name}: {e}") from e
    port = int(server.effective_port)
    thread = threading.Thread(target=server.run, name=f"kiosk {name}", daemon=True)
    thread.start()
    served = Served(f"http://127.0.0.1:{port}/", port, server.close)
    try:
        yield served
    finally:
        server.close()


def run_window(
    portal_url: str,
    options: KioskOptions,
    *,
    start: str = "login",
    on_start: Callable[[KioskWindow], None] | None = None,
) -> KioskWindow:
    """Open the window on the portal at `portal_url` and block until it is closed.

    Raises:
        KioskError: the URL is not an http(s) URL, or the Qt backend is missing.
    """
    status = portal_status(portal_url)
    if not status.portal:
        raise KioskError(f"no Comptoir portal answers at {portal_url}")
    page = first_page(portal_url, status, start)
    if not status.agent_reachable:
        log.warning("kiosk: the agent does not answer; showing the unreachable-agent screen")
    window = KioskWindow(page, options)
    window.run(on_start)
    return window
