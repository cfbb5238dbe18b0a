"""The site's published catalogs: named, read-only lists of software, kept in `catalogs.json`.

One TinyDB file (`portal.site.storage`) in `data_dir`: there are a handful of catalogs per
site. Each change is a read-modify-write under the file's lock (`transaction`), so the
command line and the server can change catalogs side by side.
"""

from __future__ import annotations

from pathlib import Path

from tinydb import Query

from portal.site.model import ModelError, PublishedCatalog, check_name
from portal.site.storage import open_db, transaction

__all__ = ["CatalogStore", "UnknownCatalogError"]


class UnknownCatalogError(ModelError, LookupError):
    """No catalog has that name."""


class CatalogStore:
    """The published catalogs of a site (`data_dir/catalogs.json`)."""

    FILE = "catalogs.json"

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / self.FILE
        self._db = open_db(self.path)
        self._table = self._db.table("catalogs")

    def __repr__(self) -> str:
        return f"CatalogStore({str(self.path)!r})"

    def list(self) -> list[PublishedCatalog]:
        """Every catalog, by name.

        Raises:
            StorageError: the file cannot be read.
        """
        return sorted(
            (PublishedCatalog.from_json(dict(row)) for row in self._table.all()),
            key=lambda catalog: catalog.name,
        )

    def get(self, name: str) -> PublishedCatalog:
        """The catalog `name`.

        Raises:
            UnknownCatalogError: there is none; StorageError: the file cannot be read.
        """
        rows = self._table.search(Query().name == name)
        if not rows:
            raise UnknownCatalogError(f"catalog {name!r}: no such catalog")
        return PublishedCatalog.from_json(dict(rows[0]))

    def put(self, catalog: PublishedCatalog) -> bool:
        """Add `catalog`, or replace the one of that name; True if it is new.

        Raises:
            StorageError: the file cannot be written (the previous file stays whole).
        """
        with transaction(self.path):
            new = not self._table.search(Query().name == catalog.name)
            self._table.upsert(catalog.to_json(), Query().name == catalog.name)
            return new

    def create(self, catalog: PublishedCatalog) -> None:
        """Add `catalog`, refusing a name already taken.

        Raises:
            ModelError: the name is taken; StorageError: the file cannot be written.
        """
        with transaction(self.path):
            if self._table.search(Query().name == catalog.name):
                raise ModelError(f"catalog {catalog.name!r}: the name is taken")
            self._table.insert(catalog.to_json())

    def delete(self, name: str) -> None:
        """Remove the catalog `name`.

        Raises:
            UnknownCatalogError: there is none; StorageError: the file cannot be written.
        """
        check_name(name, "catalog name")
        with transaction(self.path):
            if not self._table.remove(Query().name == name):
                raise UnknownCatalogError(f"catalog {name!r}: no such catalog")
