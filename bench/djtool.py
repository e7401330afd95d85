"""Django-side steps of the benchmark, run by ``bench/run.py`` in a subprocess with the
benchmark's environment (so that the runner itself imports neither Django nor torch).

    python bench/djtool.py prepare --family digits --user bob
        An API key for USER (predict on FAMILY), a valid request row, and the family's serving
        version registered in the benchmark's TorchServe (packaged first if needed). JSON out.
    python bench/djtool.py ids --prefix P1 [--prefix P2 ...]
        Per prefix, the request ids of the decision records whose request id starts with it.

Everything goes through the platform's own code paths (``create_api_key``'s service, the
TorchServe backend's ``load``), never around them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatehouse.settings")


def _row(signature: dict[str, Any], family: str) -> dict[str, Any]:
    """One valid input row: a real scanned digit for ``digits``, else values from the signature."""
    features = signature["features"]
    if family == "digits":
        from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

        image = load_digits().data[0]
        names = [f["name"] for f in features]
        if len(names) == len(image):
            return {name: float(v) for name, v in zip(names, image, strict=True)}
    row: dict[str, Any] = {}
    for feature in features:
        kind = feature.get("type")
        if feature.get("allowed"):
            row[feature["name"]] = feature["allowed"][0]
        elif kind == "bool":
            row[feature["name"]] = False
        elif kind == "int":
            row[feature["name"]] = int(feature.get("minimum") or 0)
        else:
            row[feature["name"]] = float(feature.get("minimum") or 0.0)
    return row


def prepare(family_slug: str, username: str, register: bool) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from apps.registry.models import ModelFamily
    from apps.registry.selectors import production_version
    from gatehouse import services

    family = ModelFamily.objects.get(slug=family_slug)
    if family.consent_purpose:
        raise SystemExit(
            f"{family_slug} needs consent ({family.consent_purpose}); the benchmark uses a "
            "family without consent so that every request is served (try digits)."
        )
    version = production_version(family=family)
    if version is None:
        raise SystemExit(f"{family_slug} has no production version (did seed_demo run?)")
    user = get_user_model().objects.get(username=username, is_active=True)
    created = services.apikey_create(
        user=user, name="bench", actions=["predict"], families=[family_slug], expires_days=1
    )
    target: dict[str, str] = {}
    if register:
        from apps.inference.backends import get_backend
        from apps.registry.packaging import torchserve_model_name

        backend = get_backend("torchserve")
        backend.load(version)  # packages the .mar if needed, copies it, registers it
        target = {"name": torchserve_model_name(family_slug), "version": version.version}
    return {
        "api_key": created.raw,
        "family": family_slug,
        "version": version.version,
        "row": _row(version.signature, family_slug),
        "torchserve": target,
    }


def ids(prefixes: list[str]) -> dict[str, Any]:
    from apps.inference.models import Decision

    out: dict[str, Any] = {}
    for prefix in prefixes:
        found = list(
            Decision.objects.filter(request_id__startswith=prefix).values_list(
                "request_id", flat=True
            )
        )
        out[prefix] = {"records": len(found), "ids": found}
    return out


def main() -> None:
    import django

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--family", default="digits")
    p.add_argument("--user", default="bob")
    p.add_argument("--no-register", action="store_true")
    i = sub.add_parser("ids")
    i.add_argument("--prefix", action="append", required=True)
    args = parser.parse_args()
    django.setup()
    if args.command == "prepare":
        out = prepare(args.family, args.user, register=not args.no_register)
    else:
        out = ids(args.prefix)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
