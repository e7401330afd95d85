"""Container health check of the decision log's sequencer (`manage.py run_sequencer`).

Healthy (exit 0) when some sequencer, this one or its stand-by, holds an unexpired lease and no
queued leaf has waited longer than ``--max-wait`` seconds (default 30) to be integrated; exit 1
otherwise, with the reason on stderr. The check is of the log, not of this process: a stand-by
is healthy while the active sequencer works, and both are unhealthy when nothing is being
integrated (database unreachable, signing key unusable, every sequencer gone). The container's
own exit covers a dead process.

It opens Django's database connection from the settings without loading the apps (no models,
no torch): well under a second and about 50 MB, so it can run as a frequent probe.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

# The tables of gatehouse.tlog.models.LogLease and LogLeaf (tests/test_deploy.py checks them).
LEASE_TABLE = "gatehouse_loglease"
LEAF_TABLE = "gatehouse_logleaf"


def problem(connection: Any, *, max_wait_s: float, now: float | None = None) -> str:
    """Why the log is not being sequenced, or "" when it is."""
    now = time.time() if now is None else now
    cutoff = datetime.fromtimestamp(now, UTC) - timedelta(seconds=max_wait_s)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX(expires) FROM {LEASE_TABLE}")  # noqa: S608 (constant)
        (expires,) = cursor.fetchone()
        cursor.execute(
            f"SELECT id FROM {LEAF_TABLE} WHERE idx IS NULL AND created_at < %s LIMIT 1",  # noqa: S608
            [connection.ops.adapt_datetimefield_value(cutoff)],
        )
        late = cursor.fetchone()
    if expires is None or float(expires) <= now:
        return "no sequencer holds the lease"
    if late is not None:
        return f"a leaf has waited more than {max_wait_s:g} s to be integrated"
    return ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-wait", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")
    # Django warns about queries before the apps are loaded; not loading them is the point.
    warnings.filterwarnings("ignore", message="Accessing the database during app initialization")
    try:
        from django.db import connection

        found = problem(connection, max_wait_s=args.max_wait)
    except Exception as exc:  # any failure to ask is unhealthy, and said so
        print(f"sequencer check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if found:
        print(f"sequencer check failed: {found}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
