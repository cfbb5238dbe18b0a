"""`comptoir repo sync`: a site mirror kept in step with an académie repository served on
loopback: only the site's packages with their dependencies, only changed bytes, verified before
they enter, one atomic switch, a bandwidth cap, time windows, and a sync killed mid-download
that continues where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from comptoir.cli import main
from portal.site.assignments import AssignmentStore
from portal.site.catalogs import CatalogStore
from portal.site.model import MachineGroup, PublishedCatalog
from tests.agent_harness import _tamper, wait_until
from tests.helpers import PKI
from tests.httpserver import serve_directory
from tests.test_bundle_cli import write_site
from tests.test_bundle_common import build
from usb_bundler.sync import (
    SYNC_DIR,
    RateLimiter,
    SyncError,
    SyncSchedule,
    SyncVerificationError,
    SyncWindowError,
    parse_rate,
    parse_schedule,
    read_requests_file,
    sync_repository,
)
from wapt.errors import ResolveError
from wapt.repository import load_index, recorded_files, scan_repository
from wapt.trust import TrustStore

TRUST = TrustStore.from_path(PKI / "ca.crt")
BIG = 2 * 1024 * 1024


@pytest.fixture
def academie(tmp_path: Path) -> Path:
    """The académie repository: a group, its members and their dependencies, and others."""
    repo = tmp_path / "academie"
    build(tmp_path, "tis-libx", "1.0-1", out=repo, icon=1)
    build(tmp_path, "tis-app", "2.0-1", out=repo, depends="tis-libx", icon=2)
    build(tmp_path, "groupe-6e", "1-1", out=repo, section="group", depends="tis-app")
    build(tmp_path, "tis-autre", "1.0-1", out=repo)
    build(tmp_path, "tis-gros", "1.0-1", out=repo, size=BIG)
    scan_repository(repo)
    return repo


@pytest.fixture
def served(academie: Path) -> Iterator[tuple[str, Counter[str]]]:
    counter: Counter[str] = Counter()
    with serve_directory(academie, counter) as url:
        yield url, counter


def wapt_gets(counter: Counter[str]) -> dict[str, int]:
    return {k.lstrip("/"): v for k, v in counter.items() if k.endswith(".wapt")}


def site_index(site: Path) -> list[str]:
    return sorted(e.filename for e in load_index(site, TRUST).entries)


def test_mirrors_the_sites_packages_then_only_what_changed(
    tmp_path: Path, academie: Path, served: tuple[str, Counter[str]]
) -> None:
    url, counter = served
    site = tmp_path / "site"
    first = sync_repository(url, site, TRUST, groups=["groupe-6e"])
    expected = ["groupe-6e_1-1.wapt", "tis-app_2.0-1.wapt", "tis-libx_1.0-1.wapt"]
    assert sorted(first.downloaded) == expected and first.switched
    assert site_index(site) == expected  # the index verifies and lists exactly the set
    assert sorted(p.name for p in site.glob("*.wapt")) == expected
    assert len(list((site / "icons").glob("*.png"))) == 2
    assert wapt_gets(counter) == dict.fromkeys(expected, 1)
    # the site's index records each verified package's sha256, for the bundle writer
    recorded = recorded_files((site / "Packages").read_bytes())
    for name in expected:
        assert recorded[name].matches((site / name).stat())
        assert recorded[name].sha256 == hashlib.sha256((site / name).read_bytes()).hexdigest()

    index_before = (site / "Packages").read_bytes()
    counter.clear()
    again = sync_repository(url, site, TRUST, groups=["groupe-6e"])
    assert again.downloaded == [] and sorted(again.unchanged) == expected
    assert not again.switched and wapt_gets(counter) == {}
    assert (site / "Packages").read_bytes() == index_before

    # the site publishes its own package beside the mirror; the académie moves on
    build(tmp_path, "site-regles", "1-1", out=site, section="selfservice")
    (academie / "tis-app_2.0-1.wapt").unlink()
    build(tmp_path, "tis-app", "2.1-1", out=academie, depends="tis-libx", icon=3)
    scan_repository(academie)
    counter.clear()
    third = sync_repository(url, site, TRUST, groups=["groupe-6e"], packages=["tis-autre"])
    assert sorted(third.downloaded) == ["tis-app_2.1-1.wapt", "tis-autre_1.0-1.wapt"]
    assert third.removed == ["tis-app_2.0-1.wapt"]
    assert sorted(wapt_gets(counter)) == sorted(third.downloaded)
    assert site_index(site) == [
        "groupe-6e_1-1.wapt",
        "site-regles_1-1.wapt",  # the site's own: kept and indexed, never removed
        "tis-app_2.1-1.wapt",
        "tis-autre_1.0-1.wapt",
        "tis-libx_1.0-1.wapt",
    ]
    assert not (site / "tis-app_2.0-1.wapt").exists()

    fourth = sync_repository(url, site, TRUST, packages=["tis-libx"])
    assert sorted(fourth.removed) == [
        "groupe-6e_1-1.wapt",
        "tis-app_2.1-1.wapt",
        "tis-autre_1.0-1.wapt",
    ]
    assert site_index(site) == ["site-regles_1-1.wapt", "tis-libx_1.0-1.wapt"]


def test_a_damaged_local_copy_is_downloaded_again(
    tmp_path: Path, served: tuple[str, Counter[str]]
) -> None:
    url, _ = served
    site = tmp_path / "site"
    sync_repository(url, site, TRUST, packages=["tis-libx"])
    path = site / "tis-libx_1.0-1.wapt"
    data = bytearray(path.read_bytes())
    data[500] ^= 1
    path.write_bytes(bytes(data))  # same size, other bytes: the stamp changed
    result = sync_repository(url, site, TRUST, packages=["tis-libx"])
    assert result.downloaded == ["tis-libx_1.0-1.wapt"]
    assert site_index(site) == ["tis-libx_1.0-1.wapt"]


def test_a_package_that_does_not_verify_never_enters(
    tmp_path: Path, academie: Path, served: tuple[str, Counter[str]]
) -> None:
    url, _ = served
    site = tmp_path / "site"
    sync_repository(url, site, TRUST, packages=["tis-libx"])
    before = (site / "Packages").read_bytes()
    # the control (and so the index entry) stays valid; a payload file is changed
    _tamper(academie / "tis-autre_1.0-1.wapt", "payload.bin", b"evil")
    scan_repository(academie)
    with pytest.raises(SyncVerificationError) as caught:
        sync_repository(url, site, TRUST, packages=["tis-libx", "tis-autre", "tis-app"])
    message = str(caught.value)
    assert "1 package(s) could not be mirrored; nothing was switched" in message
    assert "tis-autre_1.0-1.wapt: refused, it does not verify" in message
    assert "payload.bin" in message
    assert (site / "Packages").read_bytes() == before
    assert sorted(p.name for p in site.glob("*.wapt")) == ["tis-libx_1.0-1.wapt"]
    # the verified download waits for the next run; nothing else of it is visible
    assert [p.name for p in (site / SYNC_DIR / "ready").iterdir()] == ["tis-app_2.0-1.wapt"]


def test_an_unknown_request_names_the_package(
    tmp_path: Path, served: tuple[str, Counter[str]]
) -> None:
    with pytest.raises(ResolveError, match="tis-inconnu"):
        sync_repository(served[0], tmp_path / "site", TRUST, packages=["tis-inconnu"])
    with pytest.raises(SyncError, match="at least one package or group"):
        sync_repository(served[0], tmp_path / "site", TRUST)


def test_bandwidth_cap_is_kept(tmp_path: Path, served: tuple[str, Counter[str]]) -> None:
    url, _ = served
    rate = 1024 * 1024
    start = time.monotonic()
    result = sync_repository(url, tmp_path / "site", TRUST, packages=["tis-gros"], max_rate=rate)
    elapsed = time.monotonic() - start
    expected = result.bytes_downloaded / rate
    assert result.bytes_downloaded > BIG
    assert expected * 0.85 <= elapsed <= expected + 1.5, (elapsed, expected)


def test_rate_limiter_is_a_token_bucket() -> None:
    now = [0.0]
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(100_000.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(40):
        limiter.take(25_000)
    assert now[0] == pytest.approx(10.0, rel=0.01)  # 1,000,000 bytes at 100,000 per second
    now[0] += 100  # a long pause fills the bucket only up to a quarter of a second
    before = now[0]
    limiter.take(125_000)
    assert now[0] - before == pytest.approx(1.0, rel=0.01)
    assert max(waited) <= 0.25 + 1e-9


def test_parse_rate() -> None:
    assert parse_rate("2M") == 2 * 1024**2
    assert parse_rate("500k") == 500 * 1024
    assert parse_rate("1.5MiB/s") == int(1.5 * 1024**2)
    assert parse_rate("800000") == 800000
    for bad in ("fast", "2X", "0", "-1M", "100"):
        with pytest.raises(SyncError, match="--max-rate"):
            parse_rate(bad)


def test_windows_nights_and_weekends() -> None:
    schedule = parse_schedule(["22:00-06:00", "sat,sun 00:00-24:00"])
    friday = datetime(2026, 11, 20).astimezone()
    assert friday.weekday() == 4
    at = friday.replace
    assert not schedule.is_open(at(hour=21, minute=59))
    assert schedule.is_open(at(hour=22))
    assert schedule.is_open(at(hour=23, minute=59) + timedelta(hours=2))  # Saturday 01:59
    assert schedule.is_open(at(hour=12) + timedelta(days=1))  # Saturday noon
    assert schedule.is_open(at(hour=5) + timedelta(days=3))  # Monday 05:00: Sunday's night
    assert not schedule.is_open(at(hour=6) + timedelta(days=3))  # Monday 06:00
    assert schedule.next_opening(at(hour=9)) == at(hour=22)
    only_weekdays = parse_schedule(["20:00-23:00"], "mon-fri")
    assert not only_weekdays.is_open(at(hour=21) + timedelta(days=1))
    assert only_weekdays.next_opening(at(hour=23) + timedelta(days=1)) == at(hour=20) + timedelta(
        days=3
    )
    assert str(schedule) == "22:00-06:00 or sat,sun 00:00-24:00"
    assert parse_schedule(days="sam,dim").is_open(at(hour=3) + timedelta(days=1))
    assert SyncSchedule().is_open(at(hour=12))
    for bad, why in (
        ("22h-6h", "write HH:MM-HH:MM"),
        ("25:00-06:00", "not a time of day"),
        ("funday 01:00-02:00", "not a day"),
        ("24:00-06:00", "cannot start at 24:00"),
    ):
        with pytest.raises(SyncError, match=why):
            parse_schedule([bad])


def test_outside_the_window_it_exits_or_waits(
    tmp_path: Path, served: tuple[str, Counter[str]]
) -> None:
    url, counter = served
    schedule = parse_schedule(["22:00-06:00"])
    now = [datetime(2026, 11, 20, 21, 59, 30).astimezone()]
    with pytest.raises(SyncWindowError) as caught:
        sync_repository(url, tmp_path / "site", TRUST, packages=["tis-libx"], schedule=schedule,
                        clock=lambda: now[0])  # fmt: skip
    assert "outside the sync window (22:00-06:00): it opens on Fri 2026-11-20 22:00" in str(
        caught.value
    )
    assert "--wait" in str(caught.value) and counter == Counter()

    slept: list[float] = []
    notices: list[str] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += timedelta(seconds=seconds)

    result = sync_repository(url, tmp_path / "site", TRUST, packages=["tis-libx"],
                             schedule=schedule, wait=True, clock=lambda: now[0], sleep=sleep,
                             notice=notices.append)  # fmt: skip
    assert result.downloaded == ["tis-libx_1.0-1.wapt"]
    assert sum(slept) == pytest.approx(30, abs=1.5)
    assert notices == ["outside the sync window (22:00-06:00): waiting until Fri 2026-11-20 22:00"]


def test_window_closing_mid_download_stops_and_the_next_run_continues(
    tmp_path: Path, served: tuple[str, Counter[str]]
) -> None:
    url, _ = served
    site = tmp_path / "site"
    schedule = parse_schedule(["22:00-06:00"])
    start = datetime(2026, 11, 21, 5, 59, 59, 880_000).astimezone()
    calls = [0]

    def clock() -> datetime:  # each look at the clock is 0.02 s later: the window closes
        calls[0] += 1
        return start + timedelta(seconds=calls[0] * 0.02)

    with pytest.raises(SyncWindowError, match="closed during the download of tis-gros"):
        sync_repository(url, site, TRUST, packages=["tis-gros"], schedule=schedule, clock=clock)
    part = site / SYNC_DIR / "partial" / "tis-gros_1.0-1.wapt.part"
    kept = part.stat().st_size
    assert 0 < kept < BIG
    assert not (site / "Packages").exists()
    result = sync_repository(url, site, TRUST, packages=["tis-gros"])
    assert result.bytes_resumed == kept
    assert result.bytes_downloaded + kept == (site / "tis-gros_1.0-1.wapt").stat().st_size
    assert site_index(site) == ["tis-gros_1.0-1.wapt"]


def test_sync_killed_mid_download_continues(
    tmp_path: Path, served: tuple[str, Counter[str]]
) -> None:
    """The real command, SIGKILLed while it downloads at a capped rate, then run again."""
    url, _ = served
    site = tmp_path / "site"
    requests = tmp_path / "requests.txt"
    requests.write_text("# the site's needs\ntis-gros\n\ngroup:groupe-6e\n", "utf-8")
    argv = [
        str(Path(sys.executable).parent / "comptoir"),
        "repo",
        "sync",
        "--from",
        url,
        "--to",
        str(site),
        "--trusted",
        str(PKI / "ca.crt"),
        "--requests",
        str(requests),
        "--json",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPTOIR_")}
    child = subprocess.Popen([*argv, "--max-rate", "512K"], env=env, stdout=subprocess.DEVNULL)
    part = site / SYNC_DIR / "partial" / "tis-gros_1.0-1.wapt.part"
    try:
        wait_until(lambda: part.exists() and part.stat().st_size > 256 * 1024, timeout=30)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    kept = part.stat().st_size
    assert not (site / "Packages").exists()  # nothing switched

    again = subprocess.run(argv, env=env, capture_output=True, check=False)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["switched"] and report["bytes_resumed"] >= kept
    size = (site / "tis-gros_1.0-1.wapt").stat().st_size
    assert report["bytes_downloaded"] < size + 200_000  # the big file was not fetched again
    assert "tis-gros_1.0-1.wapt" in site_index(site)
    assert len(site_index(site)) == 4
    assert not list((site / SYNC_DIR / "partial").iterdir())


def test_cli_messages(tmp_path: Path, served: tuple[str, Counter[str]]) -> None:
    runner = CliRunner()
    base = ["repo", "sync", "--from", served[0], "--to", str(tmp_path / "site")]
    base += ["--trusted", str(PKI / "ca.crt")]
    usage = runner.invoke(main, base)
    assert usage.exit_code == 2 and "at least one --package, --group, --requests" in usage.output
    now = datetime.now().astimezone()
    closed = f"{(now + timedelta(hours=2)):%H}:00-{(now + timedelta(hours=3)):%H}:00"
    outside = runner.invoke(main, [*base, "--package", "tis-libx", "--window", closed])
    assert outside.exit_code == 1
    assert f"outside the sync window ({closed})" in outside.output
    bad = runner.invoke(main, [*base, "--package", "tis-libx", "--max-rate", "vite"])
    assert bad.exit_code == 1 and "--max-rate 'vite': not a rate" in bad.output
    done = runner.invoke(main, [*base, "--package", "tis-app", "--max-rate", "50M"])
    assert done.exit_code == 0, done.output
    assert "2 packages (2 downloaded" in done.output


def test_requests_file(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text("tis-a\n  # comment\ngroup:salle-101\npackage:tis-b(>=2) # note\n")
    assert read_requests_file(path) == (["tis-a", "tis-b(>=2)"], ["salle-101"])
    with pytest.raises(SyncError, match="cannot read the requests file"):
        read_requests_file(tmp_path / "absent")


def test_state_file_damage_is_explained(tmp_path: Path, served: tuple[str, Counter[str]]) -> None:
    site = tmp_path / "site"
    sync_repository(served[0], site, TRUST, packages=["tis-libx"])
    (site / SYNC_DIR / "state.json").write_text("{nope")
    with pytest.raises(SyncError, match=r"state\.json: unreadable .*remove it"):
        sync_repository(served[0], site, TRUST, packages=["tis-libx"])
    shutil.rmtree(site / SYNC_DIR)
    assert sync_repository(served[0], site, TRUST, packages=["tis-libx"]).downloaded == []


def test_site_config_mirrors_what_is_assigned_or_published(
    tmp_path: Path, served: tuple[str, Counter[str]]
) -> None:
    """The site's own stores say what it needs: assignments (not uninstalls) and catalogs."""
    site_config = write_site(tmp_path)
    data = tmp_path / "site-data"
    assignments = AssignmentStore(data)
    assignments.save_group(MachineGroup("salle-101", "Salle 101"), create=True)
    assignments.assign("tis-app", "required", group="salle-101")
    assignments.assign("tis-gros", "uninstall", group="salle-101")
    CatalogStore(data).create(PublishedCatalog("divers", "Divers", packages=("tis-autre",)))
    site = tmp_path / "site-repo"
    base = ["repo", "sync", "--from", served[0], "--to", str(site), "--trusted"]
    result = CliRunner().invoke(
        main, [*base, str(PKI / "ca.crt"), "--site-config", str(site_config), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.output)["packages"]) == [
        "tis-app_2.0-1.wapt",
        "tis-autre_1.0-1.wapt",
        "tis-libx_1.0-1.wapt",
    ]
    assert site_index(site) == sorted(json.loads(result.output)["packages"])
