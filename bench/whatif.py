"""What-if measurement for docs/performance.md: the time of one predict request in-process
(Django test client, one thread, local backend, on the benchmark's database) as it is, and with
the per-request governance reads served from a memo, one after the other:

  1. as is
  2. + the permission check (``registry_selectors.family_get``) memoised
  3. + routing (``routing.routing_for`` and ``routing.choose``) memoised
  4. + the API-key lookup (``auth.key_from_raw``) memoised

each with a persistent database connection and with a new connection per request (what the
SQLite settings do today, CONN_MAX_AGE=0). The memo stands in for a cache with invalidation;
nothing here changes the application, it patches functions inside this process only.

Run after `make bench` (it reuses var/bench):

    GATEHOUSE_VAR_DIR=var/bench .venv/bin/python bench/whatif.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")
os.environ.setdefault("GATEHOUSE_VAR_DIR", str(ROOT / "var" / "bench"))
os.environ["INFERENCE_BACKEND"] = "local"
os.environ["DEBUG"] = "false"

VARIANTS = [
    "as is",
    "+ permission check memoised",
    "+ routing memoised",
    "+ API-key lookup memoised",
]


def memo(function: Callable[..., Any], key: Callable[..., Any]) -> Callable[..., Any]:
    saved: dict[Any, Any] = {}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = key(*args, **kwargs)
        if k not in saved:
            saved[k] = function(*args, **kwargs)
        return saved[k]

    return wrapper


def main() -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from apps.inference import api, routing
    from apps.registry.selectors import production_version
    from gatehouse import auth, services

    family = "digits"
    user = get_user_model().objects.get(username="bob")
    raw_key = services.apikey_create(
        user=user, name="whatif", actions=["predict"], families=[family], expires_days=1
    ).raw
    sys.path.insert(0, str(ROOT / "bench"))
    from djtool import _row

    from apps.registry.models import ModelFamily

    version = production_version(family=ModelFamily.objects.get(slug=family))
    if version is None:
        raise SystemExit("digits has no production version: run `make bench` first")
    body = json.dumps({"rows": [_row(version.signature, family)]})
    client = Client(HTTP_HOST="127.0.0.1")
    original = {
        "family_get": api.registry_selectors.family_get,
        "routing_for": routing.routing_for,
        "choose": routing.choose,
        "key_from_raw": auth.key_from_raw,
    }

    def apply(variant: int) -> None:
        api.registry_selectors.family_get = original["family_get"]  # type: ignore[attr-defined]
        routing.routing_for = original["routing_for"]
        routing.choose = original["choose"]
        auth.key_from_raw = original["key_from_raw"]
        if variant >= 1:
            api.registry_selectors.family_get = memo(  # type: ignore[attr-defined]
                original["family_get"],
                lambda **k: (k["user"].pk, k["slug"], k["action"], getattr(k["key"], "pk", None)),
            )
        if variant >= 2:
            routing.routing_for = memo(original["routing_for"], lambda family: family.pk)
            routing.choose = memo(
                original["choose"], lambda **k: (k["family"].pk, k["jurisdiction"])
            )
        if variant >= 3:
            auth.key_from_raw = memo(original["key_from_raw"], lambda raw: raw)

    def run(n: int, new_connection: bool) -> float:
        started = time.perf_counter()
        for _ in range(n):
            response = client.post(
                f"/api/v1/models/{family}/predict",
                body,
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {raw_key}",
            )
            if response.status_code != 200:
                raise SystemExit(f"predict answered {response.status_code}: {response.content!r}")
            if new_connection:
                connection.close()
        return (time.perf_counter() - started) / n * 1000

    run(10, False)  # loads the model
    print(f"{'variant':<32} {'persistent conn':>16} {'new conn/request':>17}   (ms per request)")
    for variant, name in enumerate(VARIANTS):
        apply(variant)
        best = []
        for new_connection in (False, True):
            run(5, new_connection)
            best.append(min(run(100, new_connection) for _ in range(3)))
        print(f"{name:<32} {best[0]:>16.2f} {best[1]:>17.2f}")
    apply(0)


if __name__ == "__main__":
    main()
