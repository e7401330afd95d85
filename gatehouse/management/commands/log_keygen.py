"""Print a new signing key for the decision log (LOG_SIGNING_KEY) and its public key."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from gatehouse.tlog.verify import SignerKey


class Command(BaseCommand):
    help = "Print a new LOG_SIGNING_KEY (stdout) and its verifier key (stderr)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--origin", default=settings.LOG_ORIGIN, help="the log's origin")

    def handle(self, *args: Any, **options: Any) -> None:
        key = SignerKey.generate(options["origin"])
        self.stdout.write(key.text())
        self.stderr.write(f"public key: {key.verifier.text()}")
