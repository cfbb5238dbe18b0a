"""The one place that decides between a whole page and an htmx fragment, and carries notices.

A page template includes its partials (`templates/<blueprint>/partials/_name.html`); for an
htmx request the view's partial alone is rendered, so page and fragment have one source. Every
answer says `Vary: HX-Request`. A history restore (`HX-History-Restore-Request`) gets the page.

`notify` tells the user something after an action: a flashed message on the next page, or,
for htmx, an out-of-band update of the status line (`#announcer`, a polite live region). Every
fragment also empties the error region (`#errors`), so an error shown earlier goes away once a
request succeeds.
"""

from __future__ import annotations

from typing import Any

from flask import Response, flash, g, make_response, render_template, request

__all__ = ["fragment", "is_htmx", "notify", "render"]

_OOB = "partials/_oob.html"


def is_htmx() -> bool:
    """True for an htmx request that wants a fragment (not a history restore)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


def notify(message: str, category: str = "info") -> None:
    """Tell the user `message`: announced with the fragment, or flashed for the next page."""
    if is_htmx():
        g.setdefault("notices", []).append((category, message))
    else:
        flash(message, category)


def _response(html: str, status: int, headers: dict[str, str] | None) -> Response:
    response = make_response(html, status)
    response.headers.update(headers or {})
    response.vary.add("HX-Request")
    return response


def fragment(
    template: str,
    /,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    """Render the partial `template` with the out-of-band notices and error-region reset."""
    html = render_template(template, **context)
    html += render_template(_OOB, notices=g.pop("notices", []))
    return _response(html, status, headers)


def render(
    page: str,
    partial: str | None = None,
    /,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    """The whole `page`, or only `partial` (which the page includes) for an htmx request."""
    if partial is not None and is_htmx():
        return fragment(partial, status=status, headers=headers, **context)
    return _response(render_template(page, **context), status, headers)
