"""The catalog, "My software", install, remove, cancel and the status box: the `catalog` blueprint.

Views parse the request, make one call to the agent through the user's `UserBoard`, and render
one template. Every action is a `POST` with a CSRF token. Without JavaScript a form posts and
the browser is sent back to the page it came from; with htmx the answer is the status box
(`#status-box`, which every action targets) plus, out of band, the cards of the packages
concerned, so the page stays as it is and keeps its focus.

The status box polls `GET /tasks` every second, but only while something is pending or
running: the element that carries `hx-trigger="every 1s"` is rendered only then. Each poll
sends the packages whose cards are live (`watch`), and gets their cards back out of band.
Polls are passive: they do not count as activity for the idle timeout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from flask import Blueprint, abort, redirect, request, send_from_directory, url_for
from werkzeug.wrappers import Response

from agent_bridge.errors import NotAllowedError
from agent_bridge.models import Task
from portal import context
from portal.auth import safe_next
from portal.board import TaskItem, UserBoard, is_uuid
from portal.i18n import gettext as _
from portal.i18n import ngettext
from portal.render import is_htmx, notify, render

__all__ = ["bp"]

bp = Blueprint("catalog", __name__)

# A package name as the portal sends it: no spaces, commas, parentheses or version operators,
# so that a form cannot turn into a request for another version or several packages.
_PACKAGE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,199}")
_MAX_QUERY: Final = 200
_MAX_PAGE: Final = 1000
_MAX_WATCHED: Final = 200


# --- reading the request -------------------------------------------------------------------


def _page() -> int:
    try:
        return min(max(int(request.args.get("page", "1")), 1), _MAX_PAGE)
    except ValueError:
        return 1


def _filters() -> tuple[str, str]:
    query = request.args.get("q", "").strip()[:_MAX_QUERY]
    category = request.args.get("category", "").strip()[:_MAX_QUERY]
    return query, category


def _package_name() -> str:
    name = request.form.get("package", "").strip()
    if not _PACKAGE_NAME.fullmatch(name):
        abort(400)
    return name


def _back() -> Response:
    """After a form posted without htmx: back to the page it came from."""
    target = safe_next(request.form.get("next")) or url_for("catalog.index")
    return redirect(target, 303)


def _listing_url(endpoint: str, query: str, category: str, page: int) -> str:
    return url_for(
        endpoint, q=query or None, category=category or None, page=page if page > 1 else None
    )


# --- pages ---------------------------------------------------------------------------------


def _listing(board: UserBoard, tasks: Mapping[int, Task], *, from_first: bool) -> dict[str, Any]:
    """What the results show: the cards of the `page` asked for (and, `from_first`, of every
    page before it), and what the search form and the "Show more" button need."""
    query, category = _filters()
    page = _page()
    size = context.settings().page_size
    catalog = board.catalog(tasks=tasks)
    matches = catalog.search(query, category)
    first = 0 if from_first else (page - 1) * size
    return {
        "q": query,
        "category": category,
        "categories": catalog.categories,
        "cards": board.cards(matches[first : page * size], tasks),
        "total": len(matches),
        "page": page,
        "has_more": len(matches) > page * size,
    }


@bp.get("/")
def index() -> Response:
    """The catalog: search, category filter, cards, and the status box."""
    board = context.user_board()
    tasks = board.tasks()
    status = board.status(tasks)
    board.changes(status)
    listing = _listing(board, tasks, from_first=True)
    return render("catalog/index.html", active="catalog", box=status, **listing)


@bp.get("/catalog/results")
def results() -> Response:
    """The results of a search (htmx): the whole list, or with `page` > 1 the next cards."""
    query, category = _filters()
    page = _page()
    if not is_htmx():
        return redirect(_listing_url("catalog.index", query, category, page), 303)
    board = context.user_board()
    listing = _listing(board, board.tasks(), from_first=page == 1)
    return render(
        "catalog/index.html",
        "catalog/partials/_results.html" if page == 1 else "catalog/partials/_more_cards.html",
        headers={"HX-Push-Url": _listing_url("catalog.index", query, category, page)},
        announce_count=page == 1,
        **listing,
    )


@bp.get("/mine")
def mine() -> Response:
    """My software: what is installed here that the user may update or remove."""
    board = context.user_board()
    tasks = board.tasks()
    cards = board.installed(tasks)
    status = board.status(tasks)
    board.changes(status)
    return render(
        "catalog/mine.html",
        active="mine",
        cards=cards,
        updates=sum(1 for card in cards if card.state == "update-available"),
        box=status,
    )


@bp.get("/tasks")
def tasks() -> Response:
    """The status box; with htmx, also the cards of the watched packages, out of band."""
    context.server_session().passive = True
    board = context.user_board()
    tasks = board.tasks()
    status = board.status(tasks)
    for item in board.changes(status):
        notify(_announcement(item))
    watched = request.args.getlist("watch")[:_MAX_WATCHED] if is_htmx() else []
    return render(
        "catalog/tasks.html",
        "catalog/partials/_status.html",
        active="tasks",
        box=status,
        **_out_of_band(board, tasks, watched),
    )


@bp.get("/icons/<name>.png")
def icon(name: str) -> Response:
    """A package's icon from `icons_dir`; the neutral placeholder when there is none."""
    name = name.lower()
    if not is_uuid(name):
        abort(404)
    icons_dir = context.settings().icons_dir
    if icons_dir is not None and (icons_dir / f"{name}.png").is_file():
        response = send_from_directory(icons_dir, f"{name}.png", mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response
    return redirect(url_for("static", filename="img/package.svg"), 302)


# --- actions -------------------------------------------------------------------------------


def _out_of_band(
    board: UserBoard, tasks: Mapping[int, Task], names: Sequence[str]
) -> dict[str, Any]:
    """The cards of `names` to send out of band with the status box. On "My software", a
    package that left the machine has its card deleted instead (`oob_deleted`, their ids)."""
    if not names:
        return {"oob_cards": [], "oob_deleted": []}
    wanted = set(names)
    packages = [p for p in board.catalog(tasks=tasks).packages if p.package in wanted]
    cards = board.cards(packages, tasks)
    current = urlsplit(request.headers.get("HX-Current-URL", "")).path
    if current != url_for("catalog.mine"):
        return {"oob_cards": cards, "oob_deleted": []}
    return {
        "oob_cards": [card for card in cards if card.on_machine],
        "oob_deleted": [card.dom_id for card in cards if not card.on_machine],
    }


def _after_action(board: UserBoard, names: Sequence[str]) -> Response:
    """The answer to an action: the page it came from, or the status box and the cards."""
    tasks = board.tasks(fresh=True)
    if not is_htmx():
        return _back()
    status = board.status(tasks)
    board.changes(status)
    return render(
        "catalog/tasks.html",
        "catalog/partials/_status.html",
        box=status,
        **_out_of_band(board, tasks, names),
    )


@bp.post("/install")
def install() -> Response:
    """Queue an install: `action` is install, update (to the catalog's version) or retry
    (forced, so that a failed install runs again rather than count as installed)."""
    name = _package_name()
    action = request.form.get("action", "install")
    board = context.user_board()
    card = board.card(name)
    wanted, force = name, False
    if action == "update" and card is not None:
        wanted = f"{name}(={card.package.version})"
    elif action == "retry":
        force = True
    task = context.agent_client().install(board.session, wanted, force=force)
    board.remember([task])
    title = card.title if card is not None else name
    notify(_("“%(name)s” is queued for installation.", name=title))
    return _after_action(board, [name])


@bp.post("/remove")
def remove() -> Response:
    """Queue the removal of a package."""
    name = _package_name()
    board = context.user_board()
    card = board.card(name)
    queued = context.agent_client().remove(board.session, name)
    board.remember(queued)
    notify(_("“%(name)s” is queued for removal.", name=card.title if card else name))
    return _after_action(board, [name])


@bp.post("/update-all")
def update_all() -> Response:
    """Queue the update of every package that has a newer version."""
    board = context.user_board()
    client = context.agent_client()
    queued: list[Task] = []
    refused: list[str] = []
    names: list[str] = []
    for card in board.installed():
        if card.state != "update-available":
            continue
        try:
            queued.append(client.install(board.session, f"{card.name}(={card.package.version})"))
        except NotAllowedError:
            refused.append(card.title)
            continue
        names.append(card.name)
    board.remember(queued)
    if queued:
        notify(ngettext("%(num)d update is queued.", "%(num)d updates are queued.", len(queued)))
    else:
        notify(_("Everything is up to date."))
    if refused:
        notify(_("Not allowed: %(names)s.", names=", ".join(refused)), "error")
    return _after_action(board, names)


@bp.post("/tasks/<int:task_id>/cancel")
def cancel(task_id: int) -> Response:
    """Cancel one of the user's tasks while it is pending or running."""
    board = context.user_board()
    cancelled = context.agent_client().cancel_task(task_id, board.session)
    if cancelled is None:
        notify(_("This task had already finished."))
        names: list[str] = []
    else:
        board.remember([cancelled])
        notify(_("Cancellation requested."))
        names = list(cancelled.packages)
    return _after_action(board, names)


# --- announcements -------------------------------------------------------------------------


def _announcement(item: TaskItem) -> str:
    """What the status line says when one of the user's tasks changes state or step."""
    title = item.title
    if item.state == "pending":
        return _("%(name)s: waiting in the queue.", name=title)
    if item.state == "running":
        steps = {
            "downloading": _("%(name)s: downloading.", name=title),
            "verifying": _("%(name)s: verifying.", name=title),
            "installing": _("%(name)s: installing.", name=title),
            "removing": _("%(name)s: removing.", name=title),
        }
        return steps.get(item.step or "", _("%(name)s: in progress.", name=title))
    if item.state == "done":
        if item.kind == "remove":
            return _("%(name)s has been removed.", name=title)
        return _("%(name)s is installed.", name=title)
    if item.state == "error":
        return _("%(name)s failed: %(reason)s", name=title, reason=item.reason)
    return _("%(name)s: cancelled.", name=title)
