"""Build the kiosk executable (one folder, PyInstaller), again only when its sources changed.

    .venv/bin/python -m kiosk.build [--force]         (`make kiosk-exe`)

The build goes to `build/kiosk/dist/comptoir-kiosk/` (the executable `comptoir-kiosk`, or
`comptoir-kiosk.exe` on Windows, beside `_internal/`). A digest of every file that goes into it
(the Python packages, templates, static files, translations, the spec) is kept beside the
build; the next call reuses the build when the digest is the same. The tests and the start-up
benchmark call `build_kiosk()` too, so one build serves them all.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

__all__ = ["DIST", "ROOT", "build_kiosk", "executable", "source_digest"]

ROOT: Final = Path(__file__).resolve().parent.parent
SPEC: Final = ROOT / "kiosk" / "comptoir-kiosk.spec"
DIST: Final = ROOT / "build" / "kiosk" / "dist"
WORK: Final = ROOT / "build" / "kiosk" / "work"
#: what the executable is made of
SOURCES: Final = (
    "kiosk",
    "portal",
    "agent_bridge",
    "wapt",
    "usb_bundler",
    "comptoir",
    "templates",
    "static",
)
DIGEST_FILE: Final = ".source-digest"


class BuildError(Exception):
    """PyInstaller failed; the message holds the end of its output."""


def executable(dist: Path = DIST) -> Path:
    """Where the built executable is."""
    name = "comptoir-kiosk.exe" if os.name == "nt" else "comptoir-kiosk"
    return dist / "comptoir-kiosk" / name


def source_digest() -> str:
    """sha256 over the paths and bytes of every source file, the spec and the interpreter."""
    digest = hashlib.sha256(f"{sys.version}\n{sys.executable}\n".encode())
    files = [SPEC]
    for top in SOURCES:
        files += [
            p
            for p in (ROOT / top).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    for path in sorted(files):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_kiosk(*, force: bool = False, dist: Path = DIST) -> Path:
    """The executable, built first if it is missing or its sources changed.

    Raises:
        BuildError: PyInstaller failed.
    """
    wanted = source_digest()
    folder = dist / "comptoir-kiosk"
    stamp = folder / DIGEST_FILE
    built = not force and executable(dist).is_file() and stamp.is_file()
    if built and stamp.read_text("utf-8").strip() == wanted:
        return executable(dist)
    pyinstaller = shutil.which("pyinstaller", path=str(Path(sys.executable).parent))
    command = [pyinstaller] if pyinstaller else [sys.executable, "-m", "PyInstaller"]
    command += [
        "--noconfirm",
        "--log-level",
        "WARN",
        "--distpath",
        str(dist),
        "--workpath",
        str(WORK),
        str(SPEC),
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603 (our own command)
    if run.returncode != 0 or not executable(dist).is_file():
        raise BuildError(f"pyinstaller failed ({run.returncode}):\n{run.stderr[-4000:]}")
    stamp.write_text(wanted + "\n", "utf-8")
    return executable(dist)


def folder_size(path: Path) -> tuple[int, int]:
    """(bytes, files) of everything under `path`."""
    total = count = 0
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            total += item.stat().st_size
            count += 1
    return total, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="build even if nothing changed")
    args = parser.parse_args()
    try:
        path = build_kiosk(force=args.force)
    except BuildError as e:
        print(f"kiosk build: {e}", file=sys.stderr)
        return 1
    size, count = folder_size(path.parent)
    print(f"{path} ({size / 1e6:,.0f} MB in {count} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
