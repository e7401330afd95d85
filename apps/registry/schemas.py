"""Schemas of the registry API."""

from __future__ import annotations

from ninja import Schema


class FamilyOut(Schema):
    slug: str
    name: str
    description: str
    owner: str
    actions: list[str]
