"""Verify the transparency log of decisions and audit entries; name the first problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gatehouse.tlog import sequencer
from gatehouse.tlog.verification import verify_against, verify_log
from gatehouse.tlog.verify import VerificationError


class Command(BaseCommand):
    help = (
        "Recompute every leaf from its row and every stored node, check every checkpoint's "
        "signature and root and their consistency; exit 1 naming the first problem. With "
        "--checkpoint FILE, prove that the log grew append-only from a checkpoint kept elsewhere."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--checkpoint",
            type=Path,
            help="a signed checkpoint kept outside the database (e.g. by a witness)",
        )
        parser.add_argument(
            "--integrate",
            action="store_true",
            help="first integrate what is queued (takes the sequencer lease; fails if another "
            "sequencer holds it)",
        )
        parser.add_argument(
            "--json", action="store_true", help="print the result as JSON (size, root, counts)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["integrate"]:
            try:
                sequencer.Sequencer().drain()
            except sequencer.LeaseLost as exc:
                raise CommandError("another sequencer is active; run without --integrate") from exc
        if options["checkpoint"] is not None:
            try:
                note = options["checkpoint"].read_text(encoding="utf-8")
                old, new = verify_against(note)
            except (OSError, VerificationError) as exc:
                raise CommandError(f"checkpoint {options['checkpoint']}: {exc}") from exc
            self.stdout.write(f"the log grew append-only from {old} to {new} leaves")
        result = verify_log()
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "ok": result.ok,
                        "leaves": result.leaves,
                        "pending": result.pending,
                        "removed": result.removed,
                        "checkpoints": result.checkpoints,
                        "size": result.size,
                        "root": result.root.hex(),
                        "problem": result.problem,
                        "first_bad": result.first_bad,
                    }
                )
            )
        if not result.ok:
            raise CommandError(f"decision log broken: {result.problem}")
        if not options["json"]:
            self.stdout.write(
                f"decision log verified: {result.leaves} leaves ({result.removed} removed "
                f"lawfully, {result.pending} queued), {result.checkpoints} checkpoints, tree "
                f"size {result.size} root {result.root.hex()}"
            )
            for note in result.notes:
                self.stdout.write(f"note: {note}")
