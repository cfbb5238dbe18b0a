"""What the destination's file system allows: free space, FAT32's file size limit, file names.

Sticks are FAT32 or exFAT: files of 4 GiB or more do not fit on FAT32, `<>:"/\\|?*`, control
characters, trailing dots and spaces and names such as `CON` or `LPT1` are forbidden on both, and
two names that differ only by case are one file. Each check runs before a single byte is copied
and raises one error listing every offending name.
"""

from __future__ import annotations

import os
import shutil
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from wapt.errors import BundleFilesystemError, BundleSpaceError

FAT32_MAX_FILE = 4 * 1024**3 - 1
FAT32_TYPES = frozenset({"vfat", "msdos", "fat", "fat32"})
_FORBIDDEN = set('<>:"\\|?*')
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)
#: room kept for metadata, directory entries and cluster rounding, besides the files themselves
SPACE_MARGIN = 4 * 1024 * 1024
CLUSTER_SLACK = 64 * 1024


def _unescape_mount(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal (`\\040`)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: Path, mounts: Path = Path("/proc/mounts")) -> str | None:
    """The type of the file system holding `path` (`vfat`, `exfat`, `ext4`, …), or None when
    it cannot be told (no /proc/mounts: Windows, macOS)."""
    try:
        lines = mounts.read_text("utf-8", "replace").splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape_mount(fields[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


def is_fat32(path: Path) -> bool:
    return filesystem_type(path) in FAT32_TYPES


def check_file_sizes(sizes: Iterable[tuple[str, int]], *, fat32: bool) -> None:
    """Raises: BundleFilesystemError: on FAT32, a file of 4 GiB or more (lists each)."""
    if not fat32:
        return
    too_big = [(name, size) for name, size in sizes if size > FAT32_MAX_FILE]
    if too_big:
        listed = ", ".join(f"{name} ({size / 1024**3:.2f} GiB)" for name, size in too_big)
        raise BundleFilesystemError(
            f"FAT32 cannot hold files of 4 GiB or more: {listed}; format the stick as exFAT "
            "or NTFS, or leave these packages out"
        )


def name_problem(component: str) -> str | None:
    """Why `component` (one path component) cannot be a file name on FAT/exFAT, or None."""
    if not component or component in (".", ".."):
        return "empty name"
    if len(component) > 255:
        return "longer than 255 characters"
    bad = sorted({c for c in component if c in _FORBIDDEN or ord(c) < 32})
    if bad:
        return "forbidden character(s) " + " ".join(repr(c) for c in bad)
    if component.endswith((".", " ")):
        return "ends with a dot or a space"
    if component.split(".")[0].rstrip(" ").lower() in _RESERVED:
        return "a reserved device name on Windows"
    return None


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def check_names(paths: Iterable[str]) -> None:
    """Check bundle paths (POSIX, relative) for FAT/exFAT: every component allowed, no two
    paths equal once case is ignored.

    Raises:
        BundleFilesystemError: listing every offending name.
    """
    problems = []
    seen: dict[str, str] = {}
    for path in paths:
        for component in path.split("/"):
            why = name_problem(component)
            if why is not None:
                problems.append(f"{path!r}: {why}")
                break
        key = _fold(path)
        if key in seen and seen[key] != path:
            problems.append(f"{path!r} and {seen[key]!r} are the same file once case is ignored")
        seen.setdefault(key, path)
    if problems:
        raise BundleFilesystemError(
            "names a FAT or exFAT stick cannot hold: " + "; ".join(problems)
        )


def check_free_space(directory: Path, needed: int, files: int = 0) -> None:
    """Raises: BundleSpaceError: `directory` has less than `needed` bytes free (plus margin)."""
    wanted = needed + SPACE_MARGIN + files * CLUSTER_SLACK
    free = shutil.disk_usage(directory).free
    if free < wanted:
        raise BundleSpaceError(
            f"{directory}: {_mib(wanted)} needed, only {_mib(free)} free; free some space or use "
            "a larger stick (old files are removed only once the new bundle is complete)"
        )


def _mib(size: int) -> str:
    return f"{size / 1024**2:,.1f} MiB"
