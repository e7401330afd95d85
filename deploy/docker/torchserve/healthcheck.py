"""TorchServe container health check: GET /ping with the inference key from key_file.json.

TorchServe 0.12 needs the inference key for /ping (a wrong one gets 400) and writes its keys at
start into key_file.json in its working directory. Exit 0 when /ping says "Healthy".
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

KEY_FILE = Path(os.environ.get("TS_KEY_FILE", "/var/lib/torchserve/keys/key_file.json"))


def main() -> int:
    try:
        key = json.loads(KEY_FILE.read_text(encoding="utf-8"))["inference"]["key"]
        request = urllib.request.Request(
            "http://127.0.0.1:8080/ping", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310 (fixed URL)
            status = json.load(response).get("status")
    except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
        print(f"torchserve health check failed: {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0 if status == "Healthy" else 1


if __name__ == "__main__":
    sys.exit(main())
