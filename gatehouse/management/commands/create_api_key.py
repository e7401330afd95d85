"""Create an API key for automation and print it once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gatehouse import services
from gatehouse.errors import ApplicationError
from gatehouse.models import ApiKeyAction


class Command(BaseCommand):
    help = "Create an API key for USER, scoped to families and actions; the key is printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Username of the key's owner.")
        parser.add_argument("--name", default="automation", help="What the key is for.")
        parser.add_argument(
            "--families",
            nargs="*",
            default=[],
            help="Family slugs (default: every family the user may use).",
        )
        parser.add_argument(
            "--actions", nargs="+", default=["view", "predict"], choices=ApiKeyAction.values
        )
        parser.add_argument("--expires-days", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"], is_active=True).first()
        if user is None:
            raise CommandError(f"No active user '{options['user']}'.")
        try:
            created = services.apikey_create(
                user=user,
                name=options["name"],
                actions=options["actions"],
                families=options["families"],
                expires_days=options["expires_days"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.detail) from exc
        key = created.key
        self.stderr.write(
            f"Created key '{key.name}' for {user.username}: actions={','.join(key.actions)} "
            f"families={','.join(key.families) or '(all granted)'} "
            f"expires={key.expires_at:%Y-%m-%d}. It is shown once:"
        )
        self.stdout.write(created.raw)
