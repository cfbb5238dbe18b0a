"""Small helpers shared by tests: signers made from the fixture PKI, package sources."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import WAPT_FIXTURES
from wapt.control import PackageEntry, format_control
from wapt.trust import KeySigner, load_certificate_file, load_private_key

PKI = WAPT_FIXTURES / "pki"


def fixture_signer(stem: str) -> KeySigner:
    """A signer from the fixture PKI: `codesign`, `plain`, `expired-codesign`, `untrusted-…`."""
    ca = "untrusted-ca" if stem.startswith("untrusted") else "ca"
    chain = load_certificate_file(PKI / f"{stem}.crt") + load_certificate_file(PKI / f"{ca}.crt")
    return KeySigner(load_private_key(PKI / f"{stem}.key", None), chain)


def write_source(
    root: Path,
    package: str,
    version: str,
    *,
    section: str = "base",
    setup: bool = True,
    files: dict[str, bytes] | None = None,
    **fields: str,
) -> Path:
    """A package source directory with WAPT/control, setup.py and payload files."""
    source = root / f"{package}-{version}-src"
    (source / "WAPT").mkdir(parents=True)
    entry = PackageEntry(
        {
            "package": package,
            "version": version,
            "architecture": "all",
            "section": section,
            "priority": "optional",
            **fields,
        }
    )
    (source / "WAPT" / "control").write_text(format_control(entry), "utf-8")
    if setup:
        (source / "setup.py").write_text("def install():\n    pass\n", "utf-8")
    for name, data in (files or {}).items():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return source
