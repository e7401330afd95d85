"""Walk the decision chain and name the first record that was edited, deleted or reordered."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.inference import chain


class Command(BaseCommand):
    help = "Verify the hash chain of decision records; exit 1 naming the first broken record."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--export-head",
            action="store_true",
            help="Print the verified chain head as JSON, for anchoring.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = chain.verify()
        if not result.ok:
            raise CommandError(
                f"decision chain broken after #{result.head_seq}: {result.problem}"
                + (f" (record {result.first_bad})" if result.first_bad else "")
            )
        if options["export_head"]:
            self.stdout.write(json.dumps({"seq": result.head_seq, "chain_hash": result.head_hash}))
        else:
            self.stdout.write(
                f"decision chain verified: {result.checked} records, head "
                f"#{result.head_seq} {result.head_hash}"
            )
