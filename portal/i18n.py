"""Languages: Flask-Babel set up from the settings, the user's choice, and localized sizes.

French by default, English available. The choice is kept in the session (`session["lang"]`)
and offered on every page. Catalogs live in `portal/translations/<lang>/LC_MESSAGES/`; the
`.po` files are the source and the compiled `.mo` files are kept beside them (`make
translations` extracts, updates and compiles them; a test checks they agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from flask import Flask, current_app, session
from flask_babel import Babel, format_decimal  # type: ignore[import-untyped]
from flask_babel import gettext as babel_gettext
from flask_babel import ngettext as babel_ngettext

from portal.settings import PortalSettings

__all__ = [
    "LANGUAGE_NAMES",
    "TRANSLATIONS_DIR",
    "current_language",
    "gettext",
    "human_size",
    "init_app",
    "ngettext",
]

TRANSLATIONS_DIR: Final = Path(__file__).resolve().parent / "translations"

LANGUAGE_NAMES: Final = {"fr": "Français", "en": "English"}
"""Each language named in itself, as language switches do."""


def gettext(string: str, **variables: Any) -> str:
    """`string` in the user's language, with `variables` put in (Flask-Babel's, typed)."""
    return str(babel_gettext(string, **variables))


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    """The singular or plural of a message for `num`, in the user's language."""
    return str(babel_ngettext(singular, plural, num, **variables))


_ = gettext


def _settings() -> PortalSettings:
    settings: PortalSettings = current_app.extensions["comptoir.settings"]
    return settings


def current_language() -> str:
    """The user's language: their choice in the session, else the default one."""
    settings = _settings()
    chosen = session.get("lang")
    return chosen if chosen in settings.languages else settings.default_language


def human_size(size: int | None) -> str:
    """A byte count for people, in the user's language: "1,2 Mo", "1.2 MB"; "" for None."""
    if size is None:
        return ""
    value, unit = float(size), 0
    while value >= 1000 and unit < 3:
        value, unit = value / 1000, unit + 1
    number = str(format_decimal(value, format="#,##0" if unit == 0 else "#,##0.#"))
    if unit == 0:
        return _("%(size)s B", size=number)
    if unit == 1:
        return _("%(size)s kB", size=number)
    if unit == 2:
        return _("%(size)s MB", size=number)
    return _("%(size)s GB", size=number)


def init_app(app: Flask, settings: PortalSettings) -> None:
    """Set Flask-Babel up: translations directory, default locale, the session's choice."""
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS_DIR)
    app.config["BABEL_DEFAULT_LOCALE"] = settings.default_language
    Babel(app, locale_selector=current_language)
    app.jinja_env.filters["human_size"] = human_size

    @app.context_processor
    def languages() -> dict[str, object]:
        return {
            "current_lang": current_language(),
            "languages": [(code, LANGUAGE_NAMES[code]) for code in settings.languages],
        }
