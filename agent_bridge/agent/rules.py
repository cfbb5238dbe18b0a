"""Self-service rules: which groups may install or remove which packages (wapt-format.md §4.2).

Rules travel as ordinary signed packages of section `selfservice`, whose
`WAPT/persistent/selfservice.json` maps a group to the package names it grants:
`{"profs-maths": ["geogebra", "scratch"], ...}`. Once such a package is installed (assigned to
the machine by its host or group packages), its persistent directory holds the file; the rules
of every installed `selfservice` package are merged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger("comptoir.agent.rules")

SELFSERVICE_FILE = "selfservice.json"
MAX_RULES_FILE = 4 * 1024 * 1024

Rules = dict[str, frozenset[str]]


class RulesError(Exception):
    """A rules file is malformed; the message names the file and what is wrong."""


def parse_rules(data: bytes, *, source: str) -> Rules:
    """Parse one `selfservice.json`: a JSON object of group name -> list of package names.

    Raises:
        RulesError: not JSON, not an object of lists of strings, or too large.
    """
    if len(data) > MAX_RULES_FILE:
        raise RulesError(f"{source}: larger than {MAX_RULES_FILE} bytes")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RulesError(f"{source}: not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: a JSON object of group -> [package, ...] was expected")
    rules: Rules = {}
    for group, packages in raw.items():
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise RulesError(f"{source}: group {group!r}: a list of package names was expected")
        rules[group] = frozenset(p.strip() for p in packages if p.strip())
    return rules


def merge_rules(files: Iterable[Path]) -> Rules:
    """Merge the rules of several `selfservice.json` files; a malformed one is skipped, logged."""
    merged: dict[str, set[str]] = {}
    for path in files:
        try:
            rules = parse_rules(path.read_bytes(), source=str(path))
        except (OSError, RulesError) as e:
            log.error("self-service rules skipped: %s", e)
            continue
        for group, packages in rules.items():
            merged.setdefault(group, set()).update(packages)
    return {group: frozenset(packages) for group, packages in merged.items()}


def granted_packages(rules: Mapping[str, frozenset[str]], groups: Iterable[str]) -> frozenset[str]:
    """Every package name granted to at least one of `groups`."""
    granted: set[str] = set()
    for group in groups:
        granted |= rules.get(group, frozenset())
    return frozenset(granted)
