"""``manage.py demo_traffic``: steady prediction traffic on the demo families, as the demo API
consumer, through the same service every API request uses (governance included), so that the
monitoring dashboard moves. Real rows: German credit applicants and scikit-learn digits."""

from __future__ import annotations

import random
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.inference import services
from apps.monitoring.metrics import recorder
from apps.registry import selectors as registry_selectors
from apps.registry.demo_training import (
    CREDIT_FEATURES,
    applicant_ref,
    digits_rows,
    german_credit_frame,
)
from apps.registry.permissions import FamilyAction
from gatehouse.demo import DEMO_USERNAMES
from gatehouse.errors import ApplicationError
from gatehouse.roles import Role


class Command(BaseCommand):
    help = "Send demo predictions (credit-risk and digits) so that the dashboard moves."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
        parser.add_argument("--seconds", type=float, default=0, help="0: until Ctrl-C")
        parser.add_argument(
            "--shift",
            type=float,
            default=0.0,
            help="multiply credit amounts and durations by 1+shift (provokes drift)",
        )
        parser.add_argument(
            "--unconsented",
            type=float,
            default=0.1,
            help="share of credit requests for applicants without consent (refused)",
        )
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=DEMO_USERNAMES[Role.API_CONSUMER]).first()
        if user is None:
            raise CommandError("Run `manage.py seed_demo` first (no demo API consumer).")
        rng = random.Random(options["seed"])  # noqa: S311 - demo traffic, not cryptography
        credit = _credit_rows(options["shift"])
        digits = digits_rows()
        families = {
            slug: registry_selectors.family_get(user=user, slug=slug, action=FamilyAction.PREDICT)
            for slug in ("credit-risk", "digits")
        }
        interval = 1.0 / max(options["rate"], 0.1)
        deadline = time.monotonic() + options["seconds"] if options["seconds"] else None
        sent = served = refused = 0
        self.stdout.write(f"Sending ~{options['rate']:g} predictions/s; Ctrl-C to stop.")
        try:
            while deadline is None or time.monotonic() < deadline:
                started = time.monotonic()
                if rng.random() < 0.6:
                    index = rng.randrange(len(credit))
                    consented = rng.random() >= options["unconsented"]
                    subject = applicant_ref(rng.randrange(10) if consented else 10 + index)
                    family, row = families["credit-risk"], credit[index]
                else:
                    subject, family, row = "", families["digits"], rng.choice(digits)
                request = services.PredictRequest(
                    rows=[row],
                    subject=subject,
                    purpose=family.consent_purpose,
                    request_id=f"demo-{sent}",
                )
                sent += 1
                try:
                    services.predict(family=family, user=user, key=None, request=request)
                    served += 1
                except ApplicationError:
                    refused += 1
                if sent % 50 == 0:
                    self.stdout.write(f"{sent} sent, {served} served, {refused} refused")
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            pass
        finally:
            recorder.flush()
        self.stdout.write(f"Done: {sent} sent, {served} served, {refused} refused.")


def _credit_rows(shift: float) -> list[dict[str, Any]]:
    frame = german_credit_frame()
    names = [f["name"] for f in CREDIT_FEATURES]
    rows = frame[names].to_dict("records")
    if shift:
        for row in rows:
            for name in ("credit_amount", "duration_months"):
                feature = next(f for f in CREDIT_FEATURES if f["name"] == name)
                value = row[name] * (1 + shift)
                high = feature.get("maximum")
                row[name] = int(min(value, high) if high is not None else value)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows]
