"""Every string translated, catalogs compiled from their sources, colours with enough contrast."""

from __future__ import annotations

import re

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from portal import PROJECT_ROOT
from portal.i18n import TRANSLATIONS_DIR

CSS = PROJECT_ROOT / "static" / "css" / "portal.css"
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def _catalog(lang: str) -> Catalog:
    with open(TRANSLATIONS_DIR / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f, locale=lang)


def _key(message_id: str | tuple[str, ...]) -> str:
    return message_id[0] if isinstance(message_id, tuple) else message_id


def _source_messages() -> set[str]:
    method_map = [("portal/**.py", "python"), ("templates/**.html", "jinja2")]
    return {
        _key(message)
        for _, _, message, _, _ in extract_from_dir(str(PROJECT_ROOT), method_map, {})
        if message
    }


def test_the_babel_configuration_is_the_one_tested() -> None:
    config = (PROJECT_ROOT / "portal" / "babel.cfg").read_text()
    assert "[python: portal/**.py]" in config and "[jinja2: templates/**.html]" in config


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_every_string_is_translated(lang: str) -> None:
    catalog = _catalog(lang)
    translated = {_key(m.id): m for m in catalog if m.id}
    sources = _source_messages()
    assert sources - set(translated) == set(), "run `make translations`"
    assert set(translated) - sources == set(), "obsolete messages: run `make translations`"
    for message in translated.values():
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        assert all(strings), f"{lang}: {message.id!r} is not translated"
        assert not message.fuzzy, f"{lang}: {message.id!r} is fuzzy"
        wanted = set(PLACEHOLDER.findall(ids[-1]))
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) == wanted, f"{lang}: {message.id!r}"


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_the_compiled_catalogs_match_their_sources(lang: str) -> None:
    po = _catalog(lang)
    with open(TRANSLATIONS_DIR / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
        mo = read_mo(f)

    def pairs(catalog: Catalog) -> dict[object, object]:
        def plain(value: object) -> object:
            return tuple(value) if isinstance(value, list | tuple) else value

        return {plain(m.id): plain(m.string) for m in catalog if m.id}

    assert pairs(po) == pairs(mo), "run `make translations`"


# --- colours -------------------------------------------------------------------------------


def _colours() -> dict[str, str]:
    root = re.search(r":root\s*{(.*?)}", CSS.read_text(), re.S)
    assert root is not None
    return dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})\s*;", root.group(1)))


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


# (text, background) pairs as the style sheet uses them
TEXT_PAIRS = [
    ("text", "bg"),
    ("text", "surface"),
    ("muted", "bg"),
    ("muted", "surface"),
    ("primary", "bg"),
    ("primary", "surface"),
    ("on-primary", "primary"),
    ("on-danger", "danger"),
    ("on-topbar", "topbar"),
    ("ok-text", "ok-bg"),
    ("ok-text", "bg"),
    ("info-text", "info-bg"),
    ("warn-text", "warn-bg"),
    ("error-text", "error-bg"),
    ("error-text", "bg"),
    ("neutral-text", "neutral-bg"),
]
# focus rings and borders of controls: 3:1 (WCAG 2.2, non-text contrast)
NON_TEXT_PAIRS = [
    ("focus", "bg"),
    ("focus", "surface"),
    ("focus-on-topbar", "topbar"),
    ("border", "bg"),
    ("primary", "bg"),
]


@pytest.mark.parametrize(("fg", "bg"), TEXT_PAIRS)
def test_text_contrast_meets_wcag_aa(fg: str, bg: str) -> None:
    colours = _colours()
    assert contrast(colours[fg], colours[bg]) >= 4.5, (fg, bg)


@pytest.mark.parametrize(("fg", "bg"), NON_TEXT_PAIRS)
def test_focus_and_borders_are_visible(fg: str, bg: str) -> None:
    colours = _colours()
    assert contrast(colours[fg], colours[bg]) >= 3.0, (fg, bg)


def test_focus_is_never_hidden_and_targets_are_large() -> None:
    css = CSS.read_text()
    assert ":focus-visible {\n  outline: 3px solid var(--focus);" in css
    assert "outline: none" not in css.replace("main:focus {\n  outline: none;", "")
    assert "--target: 44px;" in css
    for rule in (".button {", 'input[type="search"],', ".main-nav a {"):
        block = css[css.index(rule) : css.index("}", css.index(rule))]
        assert "min-height: var(--target);" in block, rule


def test_the_style_sheet_is_plain_css() -> None:
    # No url() to elsewhere and no @import: the portal works offline.
    css = CSS.read_text()
    assert "@import" not in css and "url(" not in css
