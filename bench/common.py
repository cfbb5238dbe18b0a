"""Shared helpers of the benchmarks: timing, child processes and their peak memory, the machine,
the fixture PKI and the generated test data.

Every benchmark script imports this module first; it puts the checkout on `sys.path` so the
scripts measure the `wapt/` package next to them, installed or not.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wapt.control import PackageEntry  # noqa: E402
from wapt.trust import (  # noqa: E402
    Certificate,
    KeySigner,
    TrustStore,
    load_certificate_file,
    load_private_key,
    new_signer,
    save_certificate,
    save_private_key,
)

SHARED = Path(os.environ.get("COMPTOIR_SHARED", ROOT.parent / "shared"))
PKI = SHARED / "fixtures" / "wapt-1.8.2" / "pki"
#: generated packages and indexes; reused when present (see `bench/.gitignore`)
DATA = Path(os.environ.get("COMPTOIR_BENCH_DATA", BENCH / "data"))
RESULTS = BENCH / "results"
MiB = 1024 * 1024


# --- timing ----------------------------------------------------------------------------------


@dataclass
class Samples:
    """Repeated measurements of one quantity (seconds unless said otherwise)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def best(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def worst(self) -> float:
        return max(self.values)

    def describe(self, unit: str = "s", digits: int = 3) -> str:
        return (
            f"best {self.best:.{digits}f} {unit}, median {self.median:.{digits}f} {unit}, "
            f"worst {self.worst:.{digits}f} {unit} (n={len(self.values)})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "median": self.median,
            "worst": self.worst,
            "values": self.values,
        }


def repeat(fn: Callable[[], float], times: int, *, warmup: int = 0) -> Samples:
    """Call `fn` (which returns one measurement) `warmup` times, then `times` times, collected."""
    for _ in range(warmup):
        fn()
    samples = Samples()
    for _ in range(times):
        samples.add(fn())
    return samples


@dataclass
class Child:
    """One finished child process: wall clock, peak RSS and output."""

    argv: list[str]
    wall: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def maxrss_mib(self) -> float:
        return self.maxrss_kib / 1024

    def json(self) -> Any:
        """The child's stdout parsed as JSON (the benchmark workers print one object)."""
        return json.loads(self.stdout)


def run_child(
    argv: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True
) -> Child:
    """Run `argv` and reap it with `os.wait4`: the rusage is that child's alone.

    (`getrusage(RUSAGE_CHILDREN).ru_maxrss` is the largest of all children so far, useless after
    a bigger one.) Output goes to temporary files, so nothing can block on a full pipe.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        child = Child(
            list(argv),
            wall,
            usage.ru_maxrss,  # KiB on Linux
            proc.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )
    if check and child.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {child.returncode}:\n{child.stderr[-4000:]}"
        )
    return child


def python_argv(script: Path, *args: str) -> list[str]:
    """Run a benchmark script with the same interpreter, unbuffered, in a fresh process."""
    return [sys.executable, "-X", "utf8", str(script), *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


# --- the machine -----------------------------------------------------------------------------


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key and key not in info:
                info[key] = value.strip()
    except OSError:
        pass
    return info


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip('"')
    except OSError:
        pass
    return platform.system()


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "not available"
    return out.splitlines()[0] if out else "not available"


def _filesystem(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    return _first_line(["stat", "-f", "-c", "%T", str(path)])


def machine() -> dict[str, str]:
    """What the figures depend on: CPU, cores, memory, kernel, Python, OpenSSL, file system."""
    from cryptography import __version__ as cryptography_version
    from cryptography.hazmat.backends.openssl.backend import backend

    cpu = _cpuinfo()
    flags = cpu.get("flags", "").split()
    ram = _meminfo_gib()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu.get("model name", platform.processor() or "unknown")
        + (f", {cpu['cache size']} cache" if "cache size" in cpu else ""),
        "cores": f"{usable} usable ({os.cpu_count()} online)",
        "sha extensions": "yes (sha_ni)" if "sha_ni" in flags else "no",
        "ram": f"{ram:.1f} GiB" if ram else "unknown",
        "os": _os_name(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cryptography": f"{cryptography_version}, {backend.openssl_version_text()}",
        "sha256sum": _first_line(["sha256sum", "--version"]),
        "data file system": f"{_filesystem(DATA)} ({DATA})",
        "bytecode cache": "off (PYTHONDONTWRITEBYTECODE is set)"
        if os.environ.get("PYTHONDONTWRITEBYTECODE")
        else "on",
    }


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in info.items())


# --- the fixture PKI and the benchmark signers -----------------------------------------------


def fixture_signer(stem: str = "codesign") -> KeySigner:
    """A signer of the fixture PKI, as `tests/helpers.py` makes it (CA certificate in its chain)."""
    chain = load_certificate_file(PKI / f"{stem}.crt") + load_certificate_file(PKI / "ca.crt")
    return KeySigner(load_private_key(PKI / f"{stem}.key", None), chain)


def trust_store() -> TrustStore:
    """A new trust store holding the fixture CA only, as an agent would be configured."""
    return TrustStore.from_path(PKI / "ca.crt")


#: the extra signers, issued by the fixture CA once and kept under DATA/pki
EXTRA_SIGNERS = ("Équipe TICE Lyon", "Rectorat — Atelier paquets")


def signers() -> list[KeySigner]:
    """The fixture code-signing signer plus two more issued by the fixture CA (made once).

    Their keys are saved unencrypted under `DATA/pki` (throwaway test keys) so that cached data
    keeps verifying from one run to the next.
    """
    ca_chain = load_certificate_file(PKI / "ca.crt")
    result = [fixture_signer("codesign")]
    pki = DATA / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = None
    for number, cn in enumerate(EXTRA_SIGNERS, start=1):
        key_path, cert_path = pki / f"signer{number}.key", pki / f"signer{number}.crt"
        if not (key_path.exists() and cert_path.exists()):
            if ca_key is None:
                ca_key = load_private_key(PKI / "ca.key", None)
            key, cert = new_signer(ca_key, ca_chain[0], cn, code_signing=True, organization="Acme")
            save_private_key(key, key_path, None, unencrypted_ok=True, overwrite=True)
            save_certificate([cert], cert_path, overwrite=True)
        chain: list[Certificate] = load_certificate_file(cert_path) + ca_chain
        result.append(KeySigner(load_private_key(key_path, None), chain))
    return result


# --- cached data -----------------------------------------------------------------------------


def read_stamp(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "stamp.json").read_text("utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def write_stamp(directory: Path, params: dict[str, Any]) -> None:
    (directory / "stamp.json").write_text(json.dumps(params, indent=1, sort_keys=True), "utf-8")


def fresh_directory(directory: Path) -> Path:
    """Remove `directory` if it exists (only ever under DATA) and create it empty."""
    if directory.exists():
        if DATA.resolve() not in directory.resolve().parents:
            raise RuntimeError(f"refusing to remove {directory}: not under {DATA}")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


# --- realistic control data ------------------------------------------------------------------

_APPS = [
    ("firefox", "Mozilla Firefox", "Mozilla", "Internet", "navigateur web"),
    ("thunderbird", "Mozilla Thunderbird", "Mozilla", "Internet", "client de messagerie"),
    ("libreoffice", "LibreOffice", "The Document Foundation", "Bureautique", "suite bureautique"),
    ("geogebra", "GeoGebra Classique", "GeoGebra", "Mathématiques", "géométrie dynamique"),
    ("scratch", "Scratch Desktop", "MIT", "Programmation", "programmation par blocs"),
    ("audacity", "Audacity", "Muse Group", "Multimédia", "éditeur audio"),
    ("gimp", "GIMP", "The GIMP Team", "Graphisme", "retouche d'images"),
    ("inkscape", "Inkscape", "Inkscape Project", "Graphisme", "dessin vectoriel"),
    ("vlc", "VLC media player", "VideoLAN", "Multimédia", "lecteur multimédia"),
    ("7zip", "7-Zip", "Igor Pavlov", "Utilitaires", "gestionnaire d'archives"),
    ("notepadpp", "Notepad++", "Don Ho", "Programmation", "éditeur de texte"),
    ("python", "Python", "Python Software Foundation", "Programmation", "langage Python"),
    ("thonny", "Thonny", "Université de Tartu", "Programmation", "EDI Python pour débutants"),
    ("arduino", "Arduino IDE", "Arduino", "Technologie", "programmation de cartes"),
    ("sweethome3d", "Sweet Home 3D", "eTeks", "Technologie", "aménagement intérieur en 3D"),
    ("freecad", "FreeCAD", "FreeCAD", "Technologie", "modeleur 3D paramétrique"),
    ("stellarium", "Stellarium", "Stellarium", "Sciences", "planétarium"),
    ("avogadro", "Avogadro", "OpenChemistry", "Sciences", "éditeur de molécules"),
    ("qgis", "QGIS", "OSGeo", "Histoire-Géographie", "système d'information géographique"),
    ("anki", "Anki", "Ankitects", "Langues", "cartes mémoire à répétition espacée"),
    ("musescore", "MuseScore", "Muse Group", "Éducation musicale", "édition de partitions"),
    ("openboard", "OpenBoard", "OpenBoard", "Tableau numérique", "tableau blanc interactif"),
    ("xia", "Xia", "Académie de Versailles", "Éducation", "images interactives"),
    ("tuxpaint", "Tux Paint", "New Breed Software", "École primaire", "dessin pour enfants"),
    ("gcompris", "GCompris", "KDE", "École primaire", "activités éducatives"),
    ("klavaro", "Klavaro", "Felipe Castro", "Éducation", "apprentissage de la dactylographie"),
    ("blender", "Blender", "Blender Foundation", "Graphisme", "création 3D"),
    ("kdenlive", "Kdenlive", "KDE", "Multimédia", "montage vidéo"),
    ("obs", "OBS Studio", "OBS Project", "Multimédia", "capture et diffusion vidéo"),
    ("pdfsam", "PDFsam Basic", "Sober Lemur", "Bureautique", "découpage et fusion de PDF"),
    ("zotero", "Zotero", "Corporation for Digital Scholarship", "Documentation", "bibliographie"),
    ("vscodium", "VSCodium", "VSCodium", "Programmation", "éditeur de code"),
    ("edupython", "EduPython", "Académie d'Amiens", "Mathématiques", "Python pour le lycée"),
    ("algobox", "AlgoBox", "Pascal Brachet", "Mathématiques", "initiation à l'algorithmique"),
    ("regressi", "Regressi", "Jean-Michel Millet", "Sciences", "traitement de données"),
    ("latispro", "Latis Pro", "Eurosmart", "Sciences", "acquisition de mesures"),
    ("mblock", "mBlock", "Makeblock", "Technologie", "programmation de robots"),
    ("pronote", "Client PRONOTE", "Index Éducation", "Vie scolaire", "client de vie scolaire"),
    ("eclipse-temurin", "Eclipse Temurin JRE", "Adoptium", "Système", "environnement Java"),
    ("vcredist", "Visual C++ Redistributable", "Microsoft", "Système", "bibliothèques C++"),
]
_PREFIXES = ["ac", "cmp", "tice", "clg", "lyc", "ecole", "dane", "rect"]
_AUDIENCES = [
    "les élèves de cycle 3",
    "les collégiens",
    "les lycéens",
    "les enseignants",
    "la salle informatique",
    "le CDI",
    "les BTS",
]
_MAINTAINERS = [
    "Équipe TICE <tice@ac-exemple.fr>",
    "Hélène Dupré <helene.dupre@ac-exemple.fr>",
    "Loïc Bérard <loic.berard@ac-exemple.fr>",
    "Cellule numérique du rectorat <dane@ac-exemple.fr>",
]


def make_entries(count: int, *, seed: int = 20261121) -> list[PackageEntry]:
    """`count` unsigned control entries of a school repository: several versions per package,
    x86/x64, DEV/PROD, some localised, accented French text, dependencies, a few multi-line
    changelogs. Deterministic for a given seed; every `package_filename()` is distinct."""
    rng = random.Random(seed)
    entries: list[PackageEntry] = []
    seen: set[str] = set()
    names = [f"{p}-{a[0]}" for p in _PREFIXES for a in _APPS]
    rng.shuffle(names)
    apps = {f"{p}-{a[0]}": a for p in _PREFIXES for a in _APPS}
    while len(entries) < count:
        package = rng.choice(names)
        _, title, editor, category, what = apps[package]
        major, minor, patch = rng.randint(1, 130), rng.randint(0, 20), rng.randint(0, 9)
        version = f"{major}.{minor}.{patch}-{rng.randint(1, 12)}"
        architecture = rng.choice(["all", "all", "x64", "x86"])
        maturity = rng.choice(["PROD", "PROD", "PROD", "DEV", "PREPROD"])
        locale = rng.choice(["", "", "", "fr", "en", "de"])
        audience = rng.choice(_AUDIENCES)
        fields: dict[str, str | int] = {
            "package": package,
            "version": version,
            "architecture": architecture,
            "section": "base",
            "priority": "optional",
            "name": title,
            "categories": f"{category},Établissement",
            "maintainer": rng.choice(_MAINTAINERS),
            "description": f"{title}: {what}, configured for {audience.split()[-1]}",
            "description_fr": (
                f"{title} : {what}, paramétré pour {audience} "
                f"(raccourcis, mises à jour désactivées, préférences françaises)"
            ),
            "depends": ",".join(rng.sample(["ac-vcredist", "ac-eclipse-temurin", "ac-python"], 1))
            if rng.random() < 0.3
            else "",
            "maturity": maturity,
            "locale": locale,
            "target_os": "windows",
            "min_os_version": "6.1",
            "min_wapt_version": "1.8.2",
            "installed_size": rng.randint(2, 900) * MiB,
            "impacted_process": f"{package.split('-', 1)[1]}.exe",
            "editor": editor,
            "keywords": f"{what},{category.lower()},éducation",
            "licence": rng.choice(["GPL-3.0", "MPL-2.0", "Apache-2.0", "propriétaire", "BSD"]),
            "homepage": f"https://www.example.org/{package.split('-', 1)[1]}",
        }
        if rng.random() < 0.2:
            fields["changelog"] = (
                f"{version} : correctif de sécurité\n"
                f"Paramètres d'impression par défaut réglés pour {audience}\n"
                "Suppression de l'icône du bureau"
            )
        entry = PackageEntry(fields)
        filename = entry.package_filename()
        if filename in seen:
            continue
        seen.add(filename)
        entries.append(entry)
    return entries


def fmt_bytes_per_s(value: float) -> str:
    return f"{value / MiB:,.0f} MiB/s"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False), "utf-8")
    return path


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    target: str
    measured: str
    reference: str
    ratio: str
    passed: bool | None  # None: informative only

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "**FAIL**", None: "—"}[self.passed]


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| benchmark | target | measured | reference | ratio | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.benchmark} | {r.target} | {r.measured} | {r.reference} | {r.ratio} "
            f"| {r.verdict} |"
        )
    return "\n".join(lines)


def code_digest() -> str:
    """A short digest of the `wapt/` sources measured (the checkout has no commit to name)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "wapt").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def versus_wapt(measured: float, wapt: float, target: float, quick: bool) -> str:
    """The ratio cell of a timed row: speed-up on WAPT 1.8.2 and share of the time budget."""
    if quick:
        return "quick run: not judged"  # the targets and WAPT's figures are for the full size
    budget = f"{measured / target:.0%} of budget"
    return f"{wapt / measured:.0f}× faster than WAPT (median); {budget}"
