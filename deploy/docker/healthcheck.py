"""Container health check of the web image: GET /health on the local server.

Sends the first ALLOWED_HOSTS entry as Host (Django answers 400 to an unknown host, and /health
is exempt from the HTTPS redirect). Exit 0 on 200, 1 otherwise. ``--live`` asks for the liveness
answer only (no database, cache or broker call). Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

PORT = os.environ.get("GATEHOUSE_HEALTH_PORT", "8000")


def host_header() -> str:
    hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = hosts[0] if hosts else "localhost"
    if host == "*":
        return "localhost"
    return host.lstrip(".")


def main(argv: list[str]) -> int:
    query = "?probe=live" if "--live" in argv else ""
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/health{query}", headers={"Host": host_header()}
    )
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310 (fixed URL)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"health check failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
