"""tools/pip_audit_gate.py's offline fallback: OSV range rules, findings, exceptions, coverage.

Pure Python, no network, no database: the gate is loaded from its file and fed hand-made
snapshots.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _load_gate() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pip_audit_gate", ROOT / "tools/pip_audit_gate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pip_audit_gate", module)
    spec.loader.exec_module(module)
    return module


gate = _load_gate()


def advisory(vuln_id: str, package: str, *ranges: list[dict[str, str]], **extra: Any) -> dict:
    return {
        "id": vuln_id,
        "aliases": extra.pop("aliases", []),
        "modified": "2024-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": package},
                "ranges": [{"type": "ECOSYSTEM", "events": events} for events in ranges],
                "versions": extra.pop("versions", []),
            }
        ],
        **extra,
    }


def snapshot(*advisories: dict, checked: dict[str, str], taken: str = "2026-11-01") -> dict:
    return {
        "source": "pypa/advisory-database",
        "license": "CC-BY-4.0",
        "taken": taken,
        "newest_modified": f"{taken}T00:00:00Z",
        "commits": ["0" * 40],
        "packages_checked": checked,
        "advisories": list(advisories),
    }


# Two introduced/fixed pairs, listed newest first as Django's advisories list them.
TWO_BRANCHES = [
    {"introduced": "5.1"},
    {"fixed": "5.1.1"},
    {"introduced": "4.2"},
    {"fixed": "4.2.16"},
]


@pytest.mark.parametrize(
    ("events", "version", "expected"),
    [
        ([{"introduced": "0"}, {"fixed": "1.5"}], "1.4.9", True),
        ([{"introduced": "0"}, {"fixed": "1.5"}], "1.5", False),
        ([{"introduced": "1.2"}, {"fixed": "1.5"}], "1.1", False),
        ([{"introduced": "1.2"}, {"fixed": "1.5"}], "1.2", True),
        ([{"introduced": "0"}, {"last_affected": "2.0"}], "2.0", True),
        ([{"introduced": "0"}, {"last_affected": "2.0"}], "2.0.1", False),
        ([{"introduced": "0"}], "99.0", True),
        (TWO_BRANCHES, "4.2.15", True),
        (TWO_BRANCHES, "5.0.3", False),
        (TWO_BRANCHES, "5.1", True),
        (TWO_BRANCHES, "5.2.19", False),
        # a pre-release fix and a local version label
        ([{"introduced": "0"}, {"fixed": "24.7.0rc1"}], "24.3.0", True),
        ([{"introduced": "0"}, {"fixed": "1.13.1"}], "2.13.0+cpu", False),
    ],
)
def test_ecosystem_ranges_follow_the_osv_rules(
    events: list[dict[str, str]], version: str, expected: bool
) -> None:
    assert gate.in_range(Version(version), events) is expected


def test_an_explicit_versions_list_and_any_of_several_ranges_affect() -> None:
    entry = advisory(
        "PYSEC-X-1",
        "demo",
        [{"introduced": "1.0"}, {"fixed": "1.1"}],
        [{"introduced": "2.0"}, {"fixed": "2.2"}],
        versions=["0.9"],
    )["affected"][0]
    assert gate.affects(entry, "0.9")  # listed, outside every range
    assert gate.affects(entry, "1.0.5")  # first range
    assert gate.affects(entry, "2.1")  # second range
    assert not gate.affects(entry, "1.5")
    assert not gate.affects(entry, "2.2")
    assert gate.fixed_in(entry, "2.1") == "2.2"


def test_an_affected_installed_version_is_a_finding_with_its_fixed_version() -> None:
    snap = snapshot(
        advisory(
            "PYSEC-2023-228",
            "pip",
            [{"introduced": "0"}, {"fixed": "23.3"}],
            aliases=["CVE-2023-5752"],
        ),
        advisory("PYSEC-2020-1", "pip", [{"introduced": "0"}, {"fixed": "19.2"}]),
        checked={"pip": "23.2.1", "six": "1.17.0"},
    )
    report = gate.audit_offline({"pip": "23.2.1", "six": "1.17.0"}, snap, {})
    assert report.audited == 2
    assert [(f.name, f.version, f.vuln_id, f.fixed) for f in report.findings] == [
        ("pip", "23.2.1", "PYSEC-2023-228", "23.3")
    ]
    assert report.not_covered == []


def test_a_withdrawn_advisory_is_no_finding() -> None:
    snap = snapshot(
        advisory("PYSEC-2023-73", "redis", [{"introduced": "0"}], withdrawn="2023-06-06T10:37:00Z"),
        checked={"redis": "8.1.0"},
    )
    assert gate.audit_offline({"redis": "8.1.0"}, snap, {}).findings == []


def test_names_are_compared_normalised() -> None:
    snap = snapshot(
        advisory("PYSEC-X-2", "Zope.Interface", [{"introduced": "0"}, {"fixed": "9"}]),
        checked={"zope-interface": "8.7"},
    )
    report = gate.audit_offline({"zope-interface": "8.7"}, snap, {})
    assert [f.vuln_id for f in report.findings] == ["PYSEC-X-2"]


def _write_ignore(tmp_path: Path, line: str) -> Path:
    (tmp_path / ".pip-audit-ignore").write_text("# package | id | reason | end\n" + line + "\n")
    return tmp_path


def test_an_exception_with_a_future_end_date_ignores_the_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    future = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    monkeypatch.setattr(
        gate, "ROOT", _write_ignore(tmp_path, f"pip | CVE-2023-5752 | hg unused | {future}")
    )
    snap = snapshot(
        advisory(
            "PYSEC-2023-228",
            "pip",
            [{"introduced": "0"}, {"fixed": "23.3"}],
            aliases=["CVE-2023-5752"],
        ),
        checked={"pip": "23.2.1"},
    )
    report = gate.audit_offline({"pip": "23.2.1"}, snap, gate.exceptions())
    assert report.findings == []
    assert [f.vuln_id for f in report.ignored] == ["PYSEC-2023-228"]


def test_an_expired_exception_applies_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    past = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    monkeypatch.setattr(
        gate, "ROOT", _write_ignore(tmp_path, f"pip | PYSEC-2023-228 | hg unused | {past}")
    )
    allowed = gate.exceptions()
    assert "expired" in capsys.readouterr().out
    snap = snapshot(
        advisory("PYSEC-2023-228", "pip", [{"introduced": "0"}, {"fixed": "23.3"}]),
        checked={"pip": "23.2.1"},
    )
    report = gate.audit_offline({"pip": "23.2.1"}, snap, allowed)
    assert [f.vuln_id for f in report.findings] == ["PYSEC-2023-228"]


def test_a_package_missing_from_the_snapshot_is_reported_as_not_covered() -> None:
    snap = snapshot(checked={"six": "1.17.0", "attrs": "25.1.0"})
    report = gate.audit_offline({"six": "1.17.0", "newpkg": "1.0", "attrs": "26.1.0"}, snap, {})
    assert report.findings == []
    assert report.not_covered == [
        "attrs 26.1.0 (the snapshot checked 25.1.0)",
        "newpkg 1.0 (absent from the snapshot)",
    ]


def _run_offline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    snap: dict,
    installed: dict[str, str],
    **env: str,
) -> int:
    path = tmp_path / "security" / "advisories" / "pypa-snapshot.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(snap))
    monkeypatch.setattr(gate, "ROOT", tmp_path)
    monkeypatch.setattr(gate, "installed_distributions", lambda: installed)
    for name in ("CI", "PIP_AUDIT_REQUIRED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return int(
        gate.offline("test: unreachable", snapshot_path=path, today=datetime.date(2026, 11, 27))
    )


def test_not_covered_fails_only_when_the_audit_is_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = snapshot(checked={"six": "1.17.0"})
    installed = {"six": "1.17.0", "newpkg": "1.0"}
    assert _run_offline(tmp_path / "a", monkeypatch, snap, installed) == 0
    out = capsys.readouterr().out
    assert "offline audit against the PyPA advisory snapshot of 2026-11-01" in out
    assert "2 packages, 0 advisories read, 0 findings" in out
    assert "1 packages not covered by the snapshot" in out
    assert "newpkg 1.0 (absent from the snapshot)" in out
    assert "warning" not in out
    required = {"CI": "true", "PIP_AUDIT_REQUIRED": "1"}
    assert _run_offline(tmp_path / "b", monkeypatch, snap, installed, **required) == 1


def test_a_finding_fails_and_an_old_snapshot_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = snapshot(
        advisory(
            "PYSEC-2023-228",
            "pip",
            [{"introduced": "0"}, {"fixed": "23.3"}],
            aliases=["CVE-2023-5752"],
        ),
        checked={"pip": "23.2.1"},
        taken="2026-01-02",
    )
    assert _run_offline(tmp_path, monkeypatch, snap, {"pip": "23.2.1"}) == 1
    out = capsys.readouterr().out
    assert "1 findings" in out
    assert "pip 23.2.1: PYSEC-2023-228 (CVE-2023-5752), fixed in 23.3" in out
    assert "warning: the advisory snapshot is 329 days old" in out


def test_without_a_snapshot_the_result_is_not_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gate, "ROOT", tmp_path)
    monkeypatch.delenv("CI", raising=False)
    assert gate.offline("test: unreachable", snapshot_path=tmp_path / "missing.json") == 0
    assert "not checked" in capsys.readouterr().out


def test_the_committed_snapshot_is_well_formed() -> None:
    snap = json.loads((ROOT / "security/advisories/pypa-snapshot.json").read_text())
    assert snap["source"] == "pypa/advisory-database"
    assert snap["license"] == "CC-BY-4.0"
    datetime.date.fromisoformat(snap["taken"])
    assert snap["packages_checked"]
    assert all(len(commit) == 40 for commit in snap["commits"])
    for record in snap["advisories"]:
        assert record["id"]
        for entry in record["affected"]:
            assert entry["package"]["name"]
            for rng in entry["ranges"]:
                assert rng["type"] == "ECOSYSTEM"
                for event in rng["events"]:
                    ((kind, value),) = event.items()
                    assert kind in {"introduced", "fixed", "last_affected"}
                    assert value == "0" or Version(value)
