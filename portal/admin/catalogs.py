"""Published catalogs: admin pages to edit them, and public read-only pages for everyone.

- `admin_catalogs` (admins only): `/admin/catalogs` (the list and the form for a new one),
  `/admin/catalogs/<name>` (edit), `POST /admin/catalogs/<name>/delete`; every change is
  audited (`catalog.create`, `catalog.update`, `catalog.delete`).
- `catalogs` (no login): `/catalogs`, `/catalogs/<name>`, and `/catalogs/icons/<uuid>.png`.
  Each package is described from the site repository's `Packages` index, verified against the
  site's trusted certificates: title, version, description, editor, licence, icon. Package
  text is untrusted (it is escaped like everything else); a package the index does not have
  is listed as unknown.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from dataclasses import dataclass
from typing import Final

from flask import Blueprint, Flask, abort, redirect, request, send_from_directory, url_for
from werkzeug.wrappers import Response

from portal.admin import (
    DashboardItem,
    add_dashboard_item,
    admin_blueprint,
    record,
    register,
    site_settings,
)
from portal.i18n import current_language
from portal.i18n import gettext as _
from portal.render import notify, render
from portal.site.catalogs import CatalogStore, UnknownCatalogError
from portal.site.model import ModelError, PublishedCatalog
from portal.site.settings import SiteSettings
from wapt.control import PackageEntry
from wapt.errors import WaptError
from wapt.repository import INDEX_NAME, load_index
from wapt.trust import TrustStore
from wapt.version import compare_entries

__all__ = ["CatalogItem", "admin_bp", "catalog_items", "init_app", "public_bp"]

log = logging.getLogger("comptoir.admin.catalogs")

admin_bp = admin_blueprint("admin_catalogs", __name__)
public_bp = Blueprint("catalogs", __name__, url_prefix="/catalogs")

PACKAGE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
UUID: Final = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
MAX_PACKAGES: Final = 1000


@dataclass(frozen=True)
class CatalogItem:
    """One package of a published catalog, as the public page shows it."""

    package: str
    known: bool
    title: str = ""
    version: str = ""
    description: str = ""
    editor: str = ""
    licence: str = ""
    icon: str | None = None


class _IndexCache:
    """The repository's verified index, read again only when the `Packages` file changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._latest: dict[str, PackageEntry] = {}

    def latest(self, site: SiteSettings) -> dict[str, PackageEntry]:
        index = site.repository_dir / INDEX_NAME
        try:
            info = index.stat()
        except OSError:
            return {}
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if stamp == self._stamp:
                return self._latest
            try:
                loaded = load_index(site.repository_dir, TrustStore.from_path(site.trusted_certs))
            except WaptError as e:
                log.error("the site repository's index cannot be read: %s", e)
                return {}
            for discarded in loaded.discarded:
                log.warning("index entry refused: %s", discarded.reason)
            latest: dict[str, PackageEntry] = {}
            newest = functools.cmp_to_key(compare_entries)
            for entry in loaded.entries:
                current = latest.get(entry.package)
                if current is None or newest(entry) > newest(current):
                    latest[entry.package] = entry
            self._stamp, self._latest = stamp, latest
            return latest


_cache = _IndexCache()


def catalog_items(site: SiteSettings, catalog: PublishedCatalog, lang: str) -> list[CatalogItem]:
    """The packages of `catalog`, described from the site repository's index."""
    latest = _cache.latest(site)
    icons = site.repository_dir / "icons"
    items = []
    for name in catalog.packages:
        entry = latest.get(name)
        if entry is None:
            items.append(CatalogItem(name, known=False))
            continue
        uuid = entry.package_uuid
        has_icon = bool(UUID.match(uuid)) and (icons / f"{uuid}.png").is_file()
        items.append(
            CatalogItem(
                package=name,
                known=True,
                title=entry.name or name,
                version=entry.version,
                description=entry.description_for(lang),
                editor=str(entry.get("editor")),
                licence=str(entry.get("licence") or entry.get("license")),
                icon=uuid if has_icon else None,
            )
        )
    return items


# --- public pages --------------------------------------------------------------------------


@public_bp.get("/")
def public_index() -> Response:
    """Every published catalog."""
    return render("catalogs/index.html", catalogs=CatalogStore(site_settings().data_dir).list())


@public_bp.get("/<name>")
def public_show(name: str) -> Response:
    """One catalog and its software."""
    try:
        catalog = CatalogStore(site_settings().data_dir).get(name)
    except UnknownCatalogError:
        abort(404)
    items = catalog_items(site_settings(), catalog, current_language())
    return render("catalogs/show.html", catalog=catalog, items=items)


@public_bp.get("/icons/<uuid>.png")
def icon(uuid: str) -> Response:
    """A package icon from the site repository (`icons/<package_uuid>.png`)."""
    if not UUID.match(uuid):
        abort(404)
    response = send_from_directory(
        site_settings().repository_dir / "icons", f"{uuid}.png", mimetype="image/png"
    )
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


# --- admin pages ---------------------------------------------------------------------------


@dataclass
class _Form:
    name: str = ""
    title: str = ""
    description: str = ""
    packages: str = ""

    @classmethod
    def from_catalog(cls, catalog: PublishedCatalog) -> _Form:
        return cls(catalog.name, catalog.title, catalog.description, "\n".join(catalog.packages))

    @classmethod
    def posted(cls, name: str | None = None) -> _Form:
        form = request.form
        return cls(
            name=name if name is not None else form.get("name", "").strip(),
            title=form.get("title", "").strip(),
            description=form.get("description", "").strip(),
            packages=form.get("packages", ""),
        )

    def catalog(self) -> tuple[PublishedCatalog | None, list[str]]:
        """The catalog described, or the list of what is wrong."""
        errors = []
        packages = list(
            dict.fromkeys(
                re.split(r"[\s,]+", self.packages.strip()) if self.packages.strip() else []
            )
        )
        bad = [name for name in packages if not PACKAGE_NAME.match(name)]
        if bad:
            errors.append(
                _("Not package names: %(names)s.", names=", ".join(name[:64] for name in bad[:5]))
            )
        if len(packages) > MAX_PACKAGES:
            errors.append(_("At most %(num)d packages.", num=MAX_PACKAGES))
        if len(self.title) > 200 or len(self.description) > 4000:
            errors.append(_("The title or the description is too long."))
        if errors:
            return None, errors
        try:
            return PublishedCatalog(self.name, self.title, self.description, tuple(packages)), []
        except ModelError:
            if not self.title:
                errors.append(_("Give the catalog a title."))
            else:
                errors.append(_("The name: 1 to 64 lower-case letters, digits and inner dashes."))
            return None, errors


def _store() -> CatalogStore:
    return CatalogStore(site_settings().data_dir)


def _list_page(form: _Form, errors: list[str], status: int = 200) -> Response:
    return render(
        "admin/catalogs/index.html",
        catalogs=_store().list(),
        form=form,
        errors=errors,
        status=status,
    )


@admin_bp.get("/catalogs")
def index() -> Response:
    """The published catalogs, and the form for a new one."""
    return _list_page(_Form(), [])


@admin_bp.post("/catalogs")
def create() -> Response:
    """Publish a new catalog."""
    form = _Form.posted()
    catalog, errors = form.catalog()
    if catalog is not None:
        try:
            _store().create(catalog)
        except ModelError:
            errors = [_("A catalog named “%(name)s” already exists.", name=form.name)]
    if catalog is None or errors:
        return _list_page(form, errors, 400)
    record("catalog.create", catalog.name, details=" ".join(catalog.packages))
    notify(_("Catalog “%(title)s” published.", title=catalog.title), "info")
    return redirect(url_for("admin_catalogs.index"), 303)


@admin_bp.route("/catalogs/<name>", methods=["GET", "POST"])
def edit(name: str) -> Response:
    """Change a catalog's title, description and packages."""
    store = _store()
    try:
        current = store.get(name)
    except UnknownCatalogError:
        abort(404)
    if request.method == "GET":
        return render(
            "admin/catalogs/edit.html", catalog=current, form=_Form.from_catalog(current), errors=[]
        )
    form = _Form.posted(name)
    catalog, errors = form.catalog()
    if catalog is None:
        return render(
            "admin/catalogs/edit.html", catalog=current, form=form, errors=errors, status=400
        )
    store.put(catalog)
    record("catalog.update", name, details=" ".join(catalog.packages))
    notify(_("Catalog “%(title)s” saved.", title=catalog.title), "info")
    return redirect(url_for("admin_catalogs.index"), 303)


@admin_bp.post("/catalogs/<name>/delete")
def delete(name: str) -> Response:
    """Withdraw a catalog."""
    try:
        _store().delete(name)
    except (UnknownCatalogError, ModelError):
        abort(404)
    record("catalog.delete", name)
    notify(_("Catalog “%(name)s” withdrawn.", name=name), "info")
    return redirect(url_for("admin_catalogs.index"), 303)


def _count() -> DashboardItem:
    return DashboardItem(_("Published catalogs"), len(_store().list()), "admin_catalogs.index")


def init_app(app: Flask, site: SiteSettings) -> None:
    """Register the admin and public catalog pages."""
    register(app, admin_bp)
    register(app, public_bp)
    add_dashboard_item(app, _count)
