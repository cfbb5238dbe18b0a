"""USB bundles and mirrors: choose a package set, write it incrementally and atomically, sign it.

The format and its verification live in `wapt.bundle`; this package writes bundles
(`create_or_update_bundle`), makes and unlocks the site's bundle keys (`new_bundle_keys`,
`load_bundle_keys`), and chooses package sets from a repository (`packages_from_repository`).
"""

from __future__ import annotations

from usb_bundler.keys import BundleKeys, load_bundle_keys, new_bundle_keys, rotate_bundle_keys
from usb_bundler.select import (
    Selection,
    SourcePackage,
    package_from_file,
    packages_from_files,
    packages_from_repository,
)
from usb_bundler.writer import WriteProgress, WriteResult, create_or_update_bundle

__all__ = [
    "BundleKeys",
    "Selection",
    "SourcePackage",
    "WriteProgress",
    "WriteResult",
    "create_or_update_bundle",
    "load_bundle_keys",
    "new_bundle_keys",
    "package_from_file",
    "packages_from_files",
    "packages_from_repository",
    "rotate_bundle_keys",
]
