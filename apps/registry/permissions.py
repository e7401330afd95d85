"""The per-object permissions of a model family, by the action they allow."""

from __future__ import annotations

from enum import StrEnum


class FamilyAction(StrEnum):
    VIEW = "view"
    PREDICT = "predict"
    MANAGE = "manage"
    APPROVE = "approve"

    @property
    def codename(self) -> str:
        return f"{self.value}_modelfamily"

    @property
    def perm(self) -> str:
        return f"registry.{self.codename}"
