"""The hostile corpus: each file is refused for the right reason, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_DATA
from tests.helpers import PKI
from wapt import errors
from wapt.package import extract_package, verify_package
from wapt.trust import TrustStore

HOSTILE = TEST_DATA / "hostile"
CORPUS: list[dict[str, Any]] = json.loads((HOSTILE / "corpus.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def trust() -> TrustStore:
    return TrustStore.from_path(PKI / "ca.crt")


def error_class(name: str) -> type[errors.WaptError]:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.WaptError)
    return cls  # type: ignore[no-any-return]


def test_corpus_is_complete() -> None:
    listed = {case["file"] for case in CORPUS}
    on_disk = {p.name for p in HOSTILE.glob("*.wapt")}
    assert listed == on_disk
    assert len(listed) > 60


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c["file"])
def test_hostile_package_is_refused_for_its_reason(case: dict[str, Any], trust: TrustStore) -> None:
    path = HOSTILE / case["file"]
    if case["expect"] is None:
        verify_package(path, trust)
        return
    with pytest.raises(errors.VerificationError) as caught:
        verify_package(path, trust)
    allowed = [error_class(n) for n in [case["expect"], *case["also_acceptable"]]]
    assert any(caught.value.has(cls) for cls in allowed), caught.value.problems
    assert str(caught.value).startswith(case["file"] + ":")


@pytest.mark.parametrize("case", [c for c in CORPUS if c["expect"]], ids=lambda c: c["file"])
def test_nothing_is_written_from_a_hostile_package(
    case: dict[str, Any], trust: TrustStore, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(errors.WaptError):
        extract_package(HOSTILE / case["file"], dest, trust)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []
