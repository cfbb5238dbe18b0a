"""The agent's memory savings keep behaviour: shared strings, compact catalog entries, lazy CLI.

The figures themselves are measured by `bench/agent_latency.py` (idle RSS), never here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from agent_bridge.agent.auth import Identity, LocalAccounts
from agent_bridge.agent.config import AgentConfig, RepositoryConfig
from agent_bridge.agent.core import ROW_LEFT_OUT, Agent
from comptoir.cli import COMMANDS, main
from tests.helpers import PKI, fixture_signer, write_source
from wapt.control import (
    DEFAULT_SIGNED_ATTRIBUTES,
    REPO_ATTRIBUTES,
    PackageEntry,
    compact_entry,
    format_records,
    parse_records,
)
from wapt.package import build_package
from wapt.repository import load_index, scan_repository
from wapt.trust import TrustStore

ROOT = Path(__file__).resolve().parent.parent
TYPED = (
    "package",
    "version",
    "architecture",
    "section",
    "maturity",
    "filename",
    "md5sum",
    "signature",
    "package_uuid",
    "depends",
    "conflicts",
    "locales",
    "size",
    "installed_size",
)


def _entries() -> list[PackageEntry]:
    common = {
        "architecture": "all",
        "section": "base",
        "priority": "optional",
        "maturity": "PROD",
        "description": "Éditeur de texte",
        "depends": "",
        "conflicts": "",
        "locale": "fr,en",
        "installed_size": "1024",
    }
    return [
        PackageEntry(
            {
                "package": f"ac-editor-{n}",
                "version": f"1.{n}-1",
                **common,
                "filename": f"ac-editor-{n}_1.{n}-1.wapt",
                "size": str(1000 + n),
                "md5sum": f"{n:032x}",
                "changelog": "ligne 1\nligne 2",
            }
        )
        for n in range(3)
    ]


def test_parsed_records_share_equal_values_and_read_the_same() -> None:
    entries = _entries()
    parsed = parse_records(format_records(entries))
    for original, read in zip(entries, parsed, strict=True):
        assert {k: v for k, v in read.fields.items() if v != ""} == {
            k: v for k, v in original.fields.items() if v != ""
        }
    assert format_records(parsed) == format_records(entries)
    first, second = parsed[0], parsed[1]
    for name in ("architecture", "section", "maturity", "description", "locale"):
        assert first[name] is second[name], name
    assert first["package"] is not second["package"]
    assert first["changelog"] == "ligne 1\nligne 2"  # a continuation line, still whole


def test_compact_entry_drops_empty_fields_shares_strings_and_reads_the_same() -> None:
    entries = parse_records(format_records(_entries()))
    shared: dict[str, str] = {}
    compact = [compact_entry(e, shared) for e in entries]
    for original, copy in zip(entries, compact, strict=True):
        assert "" not in copy.fields.values()
        assert "depends" in original and "depends" not in copy
        assert {k: v for k, v in original.fields.items() if v != ""} == copy.fields
        for name in (*DEFAULT_SIGNED_ATTRIBUTES, *REPO_ATTRIBUTES, "signature"):
            assert copy.get(name) == original.get(name), name
        for name in TYPED:
            assert getattr(copy, name) == getattr(original, name), name
        assert copy.description_for("fr") == original.description_for("fr")
        assert isinstance(copy["size"], int) and copy["size"] == original["size"]
    assert compact[0]["maturity"] is compact[2]["maturity"]
    assert compact[0]["maturity"] is shared["PROD"]
    assert entries[0].fields["depends"] == ""  # the original is left as it was


def test_the_agent_keeps_compact_entries_and_lists_them_as_before(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for n in range(3):
        source = write_source(
            tmp_path / "src",
            f"ac-tool-{n}",
            "1.0-1",
            maturity="PROD",
            description="Un outil",
            editor="Acme",
        )
        build_package(source, fixture_signer("codesign"), repo)
    scan_repository(repo)
    index = {e.package: e for e in load_index(repo, TrustStore.from_path(PKI / "ca.crt")).entries}
    config = AgentConfig(
        data_dir=tmp_path / "agent",
        trusted_certs=PKI / "ca.crt",
        repositories=(RepositoryConfig("school", path=repo),),
        host_uuid="4c4c4544-0042-3010-8053-b7c04f4e3132",
        admin_group="admins",
    )
    agent = Agent(config, authenticator=LocalAccounts({}))
    try:
        assert agent.refresh_catalog(network=True)["count"] == 3
        catalog = agent.catalog()
        assert all("" not in c.entry.fields.values() for c in catalog)
        assert catalog[0].entry["editor"] is catalog[1].entry["editor"]
        for item in catalog:
            assert item.entry.signature == index[item.entry.package].signature
        admin = Identity("root", frozenset({"admins"}))
        rows = agent.package_dicts(admin)
        assert [r["package"] for r in rows] == ["ac-tool-0", "ac-tool-1", "ac-tool-2"]
        for row in rows:
            expected = {
                k: v
                for k, v in index[row["package"]].fields.items()
                if v != "" and k not in ROW_LEFT_OUT
            }
            assert {k: row[k] for k in expected} == expected
            assert not set(row) & ROW_LEFT_OUT
    finally:
        agent.state.close()


def test_the_command_line_imports_only_the_command_it_runs() -> None:
    code = (
        "import json, sys\n"
        "from comptoir.cli import main\n"
        "main(['agent', '--help'], standalone_mode=False)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert "comptoir.agent" in modules
    for heavy in ("portal", "usb_bundler", "comptoir.site", "comptoir.demo", "flask_babel"):
        assert heavy not in modules, heavy


def test_the_command_line_still_lists_and_runs_every_command() -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["--help"])
    assert listed.exit_code == 0, listed.output
    for name in COMMANDS:
        assert f"\n  {name} " in listed.output, name
    for name in COMMANDS:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
    unknown = runner.invoke(main, ["no-such-command"])
    assert unknown.exit_code == 2
    assert "No such command 'no-such-command'" in unknown.output
