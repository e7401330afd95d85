"""`make security`'s pip-audit step: known-vulnerable dependencies fail, an unreachable service
does not (unless CI=true and PIP_AUDIT_REQUIRED=1).

pip-audit asks PyPI's JSON API per package and version. Where that service cannot be reached or
answers nothing (a mirror without the per-version endpoint makes pip-audit report every package
"not found on PyPI" and exit 0), the result is "not checked", never a silent pass.
Exceptions live in .pip-audit-ignore: `package | vulnerability id | reason | end date`; an
exception past its end date no longer applies.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = int(os.environ.get("PIP_AUDIT_TIMEOUT", "180"))


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
        kept[(package.lower(), vuln_id)] = reason
    return kept


def unchecked(why: str) -> int:
    print(f"pip-audit: vulnerability service unreachable, not checked ({why})")
    required = os.environ.get("CI") == "true" and os.environ.get("PIP_AUDIT_REQUIRED") == "1"
    return 1 if required else 0


def main() -> int:
    command = [sys.executable, "-m", "pip_audit", "--format", "json", "--skip-editable"]
    command += ["--progress-spinner", "off"]
    try:
        done = subprocess.run(  # noqa: S603 (fixed command)
            command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return unchecked(f"no answer within {TIMEOUT_S} s")
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return unchecked((done.stderr.strip().splitlines() or ["no report"])[-1][:200])
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = len(dependencies) - len(audited)
    if not audited:
        return unchecked(f"all {skipped} packages skipped, e.g. not found on the index")
    allowed = exceptions()
    found = [
        (d["name"], d["version"], v["id"])
        for d in audited
        for v in d.get("vulns", [])
        if (d["name"].lower(), v["id"]) not in allowed
    ]
    print(f"pip-audit: {len(audited)} packages audited, {skipped} skipped, {len(found)} findings")
    for name, version, vuln_id in found:
        print(f"  {name} {version}: {vuln_id}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
