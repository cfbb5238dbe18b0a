"""Fault injection: the writer is killed (SIGKILL) while it updates a bundle; the stick must
then hold the previous bundle or the new one, complete and verified, never anything else, and
the next write must finish the job.

Two kinds of kills: at random moments of a real run (a child process forked from the test, so
no interpreter start-up blurs the timing), and at every step that changes the stick (the
writer's `checkpoint` hook kills its own process there).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_bundle_common import (
    Corpus,
    expected_files,
    indexed,
    listing,
    staging_files,
)
from usb_bundler import BundleKeys, SourcePackage, create_or_update_bundle
from wapt.bundle import verify_bundle
from wapt.errors import BundleVerificationError

RANDOM_KILLS = 20

pytest_plugins = ["tests.test_bundle_common"]  # the shared bundle fixtures


def run_child(work: Callable[[], None], *, kill_after: float | None) -> int:
    """Run `work` in a forked child; SIGKILL it after `kill_after` seconds (if still running).
    Return the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            work()
        except BaseException:
            os._exit(3)
        os._exit(0)
    if kill_after is not None:
        deadline = time.perf_counter() + kill_after
        while time.perf_counter() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            time.sleep(min(0.002, max(deadline - time.perf_counter(), 0)))
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return status


def check_previous_or_new(
    stick: Path, keys: BundleKeys, corpus: Corpus, *, first_write: bool = False
) -> int:
    """The stick verifies as version 1 (the previous set) or 2 (the new set), exactly."""
    try:
        verified = verify_bundle(stick, keys.root)
    except BundleVerificationError as e:
        if first_write and "not a complete bundle" in str(e) and len(e.problems) == 1:
            return 0  # the first write never committed: there was no previous bundle
        raise
    expected = {1: corpus.first, 2: corpus.second}[verified.targets_version]
    assert {t.path for t in verified.packages} == {p.name for p in expected}
    # files of the other set may still be there only as leftovers the signed targets name
    leftovers = listing(stick) - expected_files(expected, verified)
    assert leftovers <= set(verified.info.retired), leftovers
    return verified.targets_version


def finish_and_check(stick: Path, keys: BundleKeys, corpus: Corpus) -> None:
    result = create_or_update_bundle(stick, corpus.second, keys)
    verified = verify_bundle(stick, keys.root)
    assert verified.warnings == (), verified.warnings
    assert {t.path for t in verified.packages} == {p.name for p in corpus.second}
    assert listing(stick) == expected_files(corpus.second, verified)
    assert staging_files(stick) == []
    assert result.version == verified.targets_version


def restore(pristine: Path, stick: Path) -> None:
    if stick.exists():
        shutil.rmtree(stick)
    shutil.copytree(pristine, stick)


def test_sigkill_at_random_moments_of_an_update(
    tmp_path: Path, bundle_v1: Path, corpus: Corpus, site_keys: BundleKeys
) -> None:
    stick = tmp_path / "stick"
    restore(bundle_v1, stick)

    def update() -> None:
        create_or_update_bundle(stick, corpus.second, site_keys)

    start = time.perf_counter()
    status = run_child(update, kill_after=None)
    duration = time.perf_counter() - start
    assert os.waitstatus_to_exitcode(status) == 0
    assert verify_bundle(stick, site_keys.root).targets_version == 2

    # Kill moments are drawn over the update's measured duration. On a busy machine a child
    # may run faster or slower than that measure, so draws go on until RANDOM_KILLS of them
    # really killed a write (bounded), and every outcome, killed or not, is checked.
    rng = random.Random(6)
    outcomes = []
    for _ in range(RANDOM_KILLS * 4):
        restore(bundle_v1, stick)
        status = run_child(update, kill_after=rng.uniform(0, duration * 1.1))
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        outcomes.append((killed, check_previous_or_new(stick, site_keys, corpus)))
        finish_and_check(stick, site_keys, corpus)
        if sum(k for k, _ in outcomes) >= RANDOM_KILLS:
            break
    assert sum(killed for killed, _ in outcomes) >= RANDOM_KILLS, outcomes
    print(f"update {duration * 1000:.0f} ms; outcomes (killed, version): {outcomes}")


def _checkpoints(
    stick: Path, pristine: Path, keys: BundleKeys, second: list[Path] | list[SourcePackage]
) -> list[str]:
    labels: list[str] = []
    restore(pristine, stick)
    create_or_update_bundle(stick, second, keys, checkpoint=labels.append)
    return labels


def _kill_at(step: int) -> Callable[[str], None]:
    seen = [0]

    def checkpoint(_label: str) -> None:
        seen[0] += 1
        if seen[0] == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint


@pytest.mark.parametrize("source", ["files", "indexed repository"])
def test_sigkill_at_every_step_of_an_update(
    tmp_path: Path, bundle_v1: Path, corpus: Corpus, site_keys: BundleKeys, source: str
) -> None:
    """Both ways of staging a file: hashed while copied (bare files), and copied by the kernel
    because the repository's scan recorded its sha256."""
    stick = tmp_path / "stick"
    second: list[Path] | list[SourcePackage] = corpus.second
    if source == "indexed repository":
        second = indexed(corpus.second, tmp_path / "repo")
    labels = _checkpoints(stick, bundle_v1, site_keys, second)
    assert "committed" in labels and any(x.startswith("placed:") for x in labels)
    assert any(x.startswith("removed:") for x in labels)
    versions = []
    for step, label in enumerate(labels, start=1):
        restore(bundle_v1, stick)
        status = run_child(
            lambda step=step: create_or_update_bundle(
                stick, second, site_keys, checkpoint=_kill_at(step)
            ),
            kill_after=None,
        )
        assert os.WIFSIGNALED(status), label
        version = check_previous_or_new(stick, site_keys, corpus)
        versions.append(version)
        committed = labels.index("committed") + 1
        assert version == (2 if step >= committed else 1), (step, label)
        finish_and_check(stick, site_keys, corpus)
    assert set(versions) == {1, 2}


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_sigkill_during_a_first_write(
    tmp_path: Path, corpus: Corpus, site_keys: BundleKeys, fraction: float
) -> None:
    stick = tmp_path / "stick"
    labels: list[str] = []
    create_or_update_bundle(tmp_path / "probe", corpus.first, site_keys, checkpoint=labels.append)
    step = max(1, int(len(labels) * fraction))
    status = run_child(
        lambda: create_or_update_bundle(stick, corpus.first, site_keys, checkpoint=_kill_at(step)),
        kill_after=None,
    )
    assert os.WIFSIGNALED(status)
    version = check_previous_or_new(stick, site_keys, corpus, first_write=True)
    assert version in (0, 1)
    create_or_update_bundle(stick, corpus.first, site_keys)
    verified = verify_bundle(stick, site_keys.root)
    assert verified.warnings == () and listing(stick) == expected_files(corpus.first, verified)
