"""`make security`'s pip-audit step: known-vulnerable dependencies fail, an unreachable service
does not (unless CI=true and PIP_AUDIT_REQUIRED=1).

pip-audit asks PyPI's JSON API per package and version. Where that service cannot be reached or
answers nothing (a mirror without the per-version endpoint makes pip-audit report every package
"not found on PyPI" and exit 0), the installed distributions are audited offline instead, against
the committed, dated snapshot of the PyPA advisory database in
security/advisories/pypa-snapshot.json (OSV records, ECOSYSTEM ranges). The snapshot is weaker
than the live service: advisories published after its newest record are unknown, so the gate
prints its date and warns once it is more than 90 days old. A distribution installed now but not
checked when the snapshot was taken (absent, or another version) is "not covered", which fails
only like the unreachable case (CI=true PIP_AUDIT_REQUIRED=1). Without the snapshot the result is
"not checked", never a silent pass.
Exceptions live in .pip-audit-ignore: `package | vulnerability id | reason | end date`; an
exception past its end date no longer applies (the id may be the advisory's id or an alias).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = int(os.environ.get("PIP_AUDIT_TIMEOUT", "180"))
SNAPSHOT = ROOT / "security" / "advisories" / "pypa-snapshot.json"
STALE_AFTER_DAYS = 90


def normalise(name: str) -> str:
    """A distribution name as the advisory database spells its folders (PEP 503)."""
    return canonicalize_name(name)


def exceptions() -> dict[tuple[str, str], str]:
    today = datetime.date.today()
    kept: dict[tuple[str, str], str] = {}
    path = ROOT / ".pip-audit-ignore"
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        package, vuln_id, reason, end = (part.strip() for part in line.split("|"))
        if datetime.date.fromisoformat(end) < today:
            print(f"pip-audit: exception {package} {vuln_id} expired on {end}: it applies no more")
            continue
        kept[(normalise(package), vuln_id)] = reason
    return kept


def required() -> bool:
    return os.environ.get("CI") == "true" and os.environ.get("PIP_AUDIT_REQUIRED") == "1"


def unchecked(why: str) -> int:
    print(f"pip-audit: vulnerability service unreachable, not checked ({why})")
    return 1 if required() else 0


# -- OSV evaluation ------------------------------------------------------------------------------

_EVENT_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 1}


def _parse(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def in_range(version: Version, events: Iterable[Mapping[str, str]]) -> bool:
    """OSV's rule for an ECOSYSTEM range: walk the events sorted by version; `introduced` (0 =
    from the start) opens, `fixed` closes before its version, `last_affected` after its own."""
    parsed: list[tuple[Version, int, str]] = []
    for event in events:
        for kind, value in event.items():
            if kind not in _EVENT_ORDER:
                continue  # `limit` and unknown kinds: not part of the affected set
            bound = Version("0") if value == "0" else _parse(value)
            if bound is not None:
                parsed.append((bound, _EVENT_ORDER[kind], kind))
    affected = False
    for bound, _, kind in sorted(parsed):
        if kind == "introduced":
            affected = affected or version >= bound
        elif version > bound or (kind == "fixed" and version == bound):
            affected = False
    return affected


def affects(entry: Mapping[str, Any], version: str) -> bool:
    """One `affected[]` entry of an OSV record: explicit versions, then ECOSYSTEM ranges."""
    if version in entry.get("versions", []):
        return True
    parsed = _parse(version)
    if parsed is None:
        return False
    if any(_parse(listed) == parsed for listed in entry.get("versions", [])):
        return True
    return any(
        in_range(parsed, r.get("events", []))
        for r in entry.get("ranges", [])
        if r.get("type") == "ECOSYSTEM"
    )


def fixed_in(entry: Mapping[str, Any], version: str) -> str:
    """The lowest `fixed` above the installed version, for the report ("" when none)."""
    installed = _parse(version)
    candidates: list[tuple[Version, str]] = []
    for r in entry.get("ranges", []):
        for event in r.get("events", []):
            bound = _parse(event.get("fixed", ""))
            if bound is not None and (installed is None or bound > installed):
                candidates.append((bound, event["fixed"]))
    return min(candidates)[1] if candidates else ""


@dataclass(frozen=True)
class Finding:
    name: str
    version: str
    vuln_id: str
    aliases: tuple[str, ...]
    fixed: str


@dataclass(frozen=True)
class OfflineReport:
    audited: int
    findings: list[Finding]
    ignored: list[Finding]
    not_covered: list[str]


def audit_offline(
    installed: Mapping[str, str],
    snapshot: Mapping[str, Any],
    allowed: Mapping[tuple[str, str], str],
) -> OfflineReport:
    """Evaluate every snapshot advisory of every installed distribution (names normalised)."""
    checked: Mapping[str, str] = snapshot.get("packages_checked", {})
    by_package: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    for record in snapshot.get("advisories", []):
        if record.get("withdrawn"):
            continue
        for entry in record.get("affected", []):
            package = entry.get("package", {})
            if package.get("ecosystem", "PyPI") == "PyPI":
                name = normalise(package.get("name", ""))
                by_package.setdefault(name, []).append((record, entry))
    findings: list[Finding] = []
    ignored: list[Finding] = []
    not_covered: list[str] = []
    for name, version in sorted(installed.items()):
        if name not in checked:
            not_covered.append(f"{name} {version} (absent from the snapshot)")
        elif checked[name] != version:
            not_covered.append(f"{name} {version} (the snapshot checked {checked[name]})")
        for record, entry in by_package.get(name, []):
            if not affects(entry, version):
                continue
            aliases = tuple(record.get("aliases", []))
            finding = Finding(name, version, record["id"], aliases, fixed_in(entry, version))
            ids = (record["id"], *aliases)
            if any((name, vuln_id) in allowed for vuln_id in ids):
                ignored.append(finding)
            else:
                findings.append(finding)
    return OfflineReport(len(installed), findings, ignored, not_covered)


def project_name() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return normalise(str(tomllib.load(handle)["project"]["name"]))


def installed_distributions() -> dict[str, str]:
    """Installed distributions by normalised name; the project itself and editable installs
    are left out, like pip-audit's --skip-editable."""
    found: dict[str, str] = {}
    project = project_name()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or normalise(name) == project:
            continue
        direct_url = dist.read_text("direct_url.json") or "{}"
        try:
            editable = bool(json.loads(direct_url).get("dir_info", {}).get("editable"))
        except (json.JSONDecodeError, AttributeError):
            editable = False
        if not editable:
            found.setdefault(normalise(name), dist.version)
    return found


def _age_days(stamp: str, today: datetime.date) -> int:
    return (today - datetime.date.fromisoformat(stamp[:10])).days


def offline(why: str, snapshot_path: Path = SNAPSHOT, today: datetime.date | None = None) -> int:
    if not snapshot_path.exists():
        return unchecked(f"{why}; no advisory snapshot at {snapshot_path.relative_to(ROOT)}")
    snapshot = json.loads(snapshot_path.read_text())
    today = today or datetime.date.today()
    taken, newest = snapshot["taken"], snapshot["newest_modified"]
    report = audit_offline(installed_distributions(), snapshot, exceptions())
    print(
        f"pip-audit: service unreachable ({why}); offline audit against the PyPA advisory "
        f"snapshot of {taken} (newest advisory {newest}): {report.audited} packages, "
        f"{len(snapshot['advisories'])} advisories read, {len(report.findings)} findings"
    )
    commits = snapshot.get("commits", [])
    print(
        f"pip-audit: snapshot source {snapshot.get('source')} ({snapshot.get('license')}), "
        f"{len(commits)} commits, listed in {snapshot_path.relative_to(ROOT)}"
    )
    stale = max(_age_days(taken, today), _age_days(newest, today))
    if stale > STALE_AFTER_DAYS:
        print(
            f"pip-audit: warning: the advisory snapshot is {stale} days old (taken {taken}, "
            f"newest advisory {newest[:10]}); later advisories are unknown to it, refresh it "
            "(docs/security.md)"
        )
    for finding in report.findings:
        known_as = f" ({', '.join(finding.aliases)})" if finding.aliases else ""
        fix = f", fixed in {finding.fixed}" if finding.fixed else ", no fixed version known"
        print(f"  {finding.name} {finding.version}: {finding.vuln_id}{known_as}{fix}")
    for finding in report.ignored:
        print(
            f"  ignored by .pip-audit-ignore: {finding.name} {finding.version}: {finding.vuln_id}"
        )
    if report.not_covered:
        print(f"pip-audit: {len(report.not_covered)} packages not covered by the snapshot:")
        for line in report.not_covered:
            print(f"  {line}")
    if report.findings:
        return 1
    return 1 if report.not_covered and required() else 0


def main() -> int:
    command = [sys.executable, "-m", "pip_audit", "--format", "json", "--skip-editable"]
    command += ["--progress-spinner", "off"]
    try:
        done = subprocess.run(  # noqa: S603 (fixed command)
            command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return offline(f"no answer within {TIMEOUT_S} s")
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return offline((done.stderr.strip().splitlines() or ["no report"])[-1][:200])
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = len(dependencies) - len(audited)
    if not audited:
        return offline(f"all {skipped} packages skipped, e.g. not found on the index")
    allowed = exceptions()
    found = [
        (d["name"], d["version"], v["id"])
        for d in audited
        for v in d.get("vulns", [])
        if (normalise(d["name"]), v["id"]) not in allowed
    ]
    print(f"pip-audit: {len(audited)} packages audited, {skipped} skipped, {len(found)} findings")
    for name, version, vuln_id in found:
        print(f"  {name} {version}: {vuln_id}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
