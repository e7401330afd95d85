"""Create the demo users (one per role) and demo data, printing new logins once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from gatehouse.demo import seed_demo


class Command(BaseCommand):
    help = "Create one demo user per role and the demo data. New logins are printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Give every demo user a new password and new 2FA codes.",
        )
        parser.add_argument(
            "--password",
            default=None,
            help="Use this password for all demo users (default: random; or DEMO_PASSWORD).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logins = seed_demo(reset=options["reset"], password=options["password"])
        if not logins:
            self.stdout.write(
                "Demo users exist already; their logins were printed when they "
                "were created. New ones: manage.py seed_demo --reset"
            )
            return
        self.stdout.write(self.style.SUCCESS("Demo logins (shown once, keep them):"))
        for login in logins:
            self.stdout.write(
                f"  {login.role.label:<20} user {login.username:<8} password {login.password}"
            )
            if login.backup_codes:
                self.stdout.write(
                    f"  {'':<20} 2FA backup codes (single use): {' '.join(login.backup_codes)}"
                )
                self.stdout.write(
                    f"  {'':<20} 2FA authenticator secret (base32): {login.totp_secret}"
                )
