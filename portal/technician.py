"""The technician view of the offline USB kiosk: unlock with the bundle's PIN, install the whole
catalog of the stick on this machine, follow it, write the report back onto the stick.

Registered by `create_app` only when the offline kiosk gives it a `TechnicianSetup`: an
ordinary portal, and so every teacher, never has these pages. The PIN goes to the agent like a
password, for the technician account the offline kiosk's agent knows (`kiosk.offline`): the
agent checks it against the salted hash in the bundle's signed metadata and answers with a
session in its admin group. So the agent still decides, and the portal never sees the hash.
Failed PINs are throttled like failed logins (`portal.throttle`, per account and address).

Every action is a `POST` with a CSRF token. The progress box polls `GET /technician/progress`
every second while something runs (htmx, `aria-live`); without JavaScript the page reloads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from flask import Blueprint, Flask, current_app, redirect, request, session, url_for
from flask_login import current_user, login_user  # type: ignore[import-untyped]
from werkzeug.wrappers import Response

from agent_bridge.errors import AgentError, AuthenticationError
from agent_bridge.models import AgentPackage, Session, Task
from portal import context
from portal.auth import PortalUser
from portal.i18n import gettext as _
from portal.i18n import ngettext
from portal.render import is_htmx, notify, render
from portal.security import guarded_by_blueprint

__all__ = ["TechnicianSetup", "bp", "init_app"]

bp = Blueprint("technician", __name__, url_prefix="/technician")

#: the session key holding the ids of the tasks the technician started
_TASKS: Final = "technician_tasks"
_MAX_PIN: Final = 64
_OPEN: Final = frozenset({"technician.index", "technician.unlock"})


@dataclass(frozen=True)
class TechnicianSetup:
    """What the offline kiosk tells the technician view.

    `username` is the agent account a correct PIN opens; `bundle_*` describe the stick for the
    page; `write_reports` writes this machine's signed report onto the stick and returns the
    files written (`Agent.write_bundle_reports`).
    """

    username: str
    bundle_name: str
    bundle_id: str
    bundle_created: str
    bundle_path: Path
    write_reports: Callable[[], Sequence[Path]] = field(repr=False)


def _setup() -> TechnicianSetup:
    setup: TechnicianSetup = current_app.extensions["comptoir.technician"]
    return setup


def _unlocked() -> bool:
    return bool(current_user.is_authenticated) and current_user.username == _setup().username


def _agent_session() -> Session:
    agent_session = context.server_session().agent_session
    assert agent_session is not None  # _unlocked() held
    return agent_session


@bp.before_app_request
def technician_first() -> Response | None:
    """The offline kiosk is the technician's: its sign-in page is the PIN form (signing out,
    or an idle timeout, lands there with the portal's message, not on the teachers' form)."""
    if request.endpoint == "auth.login" and request.method == "GET":
        return redirect(url_for("technician.index"), 303)
    return None


@bp.before_request
def only_the_technician() -> Response | None:
    """The PIN form is open; the rest needs the unlocked technician session."""
    if request.endpoint in _OPEN or _unlocked():
        return None
    return redirect(url_for("technician.index"), 303)


# --- what the page shows --------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """The technician's tasks, as the progress box shows them."""

    tasks: list[Task]

    @property
    def running(self) -> bool:
        return any(not task.is_finished for task in self.tasks)

    @property
    def percent(self) -> int:
        if not self.tasks:
            return 0
        done = sum(100.0 if t.is_finished else max(0.0, min(t.progress, 100.0)) for t in self.tasks)
        return round(done / len(self.tasks))

    @property
    def bar_class(self) -> str:
        return f"p{5 * round(self.percent / 5)}"

    def count(self, *states: str) -> int:
        return sum(1 for task in self.tasks if task.state in states)


def _progress() -> Progress:
    client = context.agent_client()
    tasks = []
    for task_id in session.get(_TASKS, []):
        task = client.task(int(task_id))
        if task is not None:
            tasks.append(task)
    return Progress(tasks)


def _packages() -> list[AgentPackage]:
    """The stick's catalog as the agent offers it to the technician (every package)."""
    return context.agent_client().packages(_agent_session())


def _page(**extra: Any) -> Response:
    packages = _packages()
    return render(
        "technician/index.html",
        setup=_setup(),
        packages=packages,
        to_install=[p for p in packages if p.state != "installed"],
        progress=_progress(),
        **extra,
    )


# --- views ----------------------------------------------------------------------------------


@bp.get("/")
def index() -> Response:
    """The PIN form, or, once unlocked, the stick's catalog and what is being installed."""
    if not _unlocked():
        return render("technician/unlock.html", setup=_setup(), error=None)
    return _page()


def _unlock_form(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return render(
        "technician/unlock.html", setup=_setup(), error=error, status=status, headers=headers
    )


@bp.post("/unlock")
def unlock() -> Response:
    """Check the PIN through the agent (throttled); a correct one opens the technician view."""
    setup = _setup()
    pin = request.form.get("pin", "").strip()
    if not pin or len(pin) > _MAX_PIN:
        return _unlock_form(_("Enter the technician PIN of this USB stick."), 400)
    throttle = context.throttle()
    address = request.remote_addr
    wait = throttle.wait(setup.username, address)
    if wait <= 0:
        try:
            agent_session = context.agent_client().login(setup.username, pin)
        except AuthenticationError:
            wait = throttle.failure(setup.username, address)
            if wait <= 0:
                return _unlock_form(_("Wrong PIN."), 401)
        else:
            throttle.success(setup.username)
            server_session = context.server_session()
            server_session.pop("csrf_token", None)
            server_session.pop(_TASKS, None)
            server_session.begin(agent_session)
            login_user(PortalUser(agent_session))
            return redirect(url_for("technician.index"), 303)
    seconds = max(1, int(wait + 0.999))
    message = ngettext(
        "Too many wrong PINs. Wait %(num)d second before trying again.",
        "Too many wrong PINs. Wait %(num)d seconds before trying again.",
        seconds,
    )
    return _unlock_form(message, 429, {"Retry-After": str(seconds)})


@bp.post("/install")
def install() -> Response:
    """Ask the agent to install every package of the stick not installed here yet."""
    client = context.agent_client()
    agent_session = _agent_session()
    started = [
        client.install(agent_session, p.package) for p in _packages() if p.state != "installed"
    ]
    session[_TASKS] = [*session.get(_TASKS, []), *(task.id for task in started)][-500:]
    if started:
        notify(
            ngettext(
                "%(num)d installation started.", "%(num)d installations started.", len(started)
            )
        )
    else:
        notify(_("Everything on this stick is already installed."))
    if is_htmx():
        return render(
            "technician/index.html",
            "technician/partials/_progress.html",
            progress=_progress(),
            setup=_setup(),
        )
    return redirect(url_for("technician.index"), 303)


@bp.get("/progress")
def progress() -> Response:
    """The progress box (htmx polls it while something runs; it is passive activity)."""
    context.server_session().passive = True
    if not is_htmx():
        return redirect(url_for("technician.index"), 303)
    return render(
        "technician/index.html",
        "technician/partials/_progress.html",
        progress=_progress(),
        setup=_setup(),
    )


@bp.post("/report")
def report() -> Response:
    """Write this machine's signed report onto the stick."""
    try:
        written = list(_setup().write_reports())
    except (OSError, AgentError) as e:
        current_app.logger.error("technician: the report could not be written: %s", e)
        written = []
    if written:
        notify(
            ngettext(
                "The report was written onto %(num)d USB stick.",
                "The report was written onto %(num)d USB sticks.",
                len(written),
            ),
            "info",
        )
    else:
        notify(
            _(
                "The report could not be written onto the USB stick. Check that the stick is "
                "still plugged in and not write-protected, then try again."
            ),
            "error",
        )
    if is_htmx():
        return render("technician/index.html", "technician/partials/_report.html", written=written)
    return redirect(url_for("technician.index"), 303)


def init_app(app: Flask, setup: TechnicianSetup) -> None:
    """Register the technician view (offline kiosk only); it guards its own pages."""
    app.extensions["comptoir.technician"] = setup
    guarded_by_blueprint(app, bp.name)
    app.register_blueprint(bp)
