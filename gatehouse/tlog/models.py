"""Stored state of the transparency log: leaves (the queue and level 0), interior nodes,
signed checkpoints and the sequencer's lease."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class LogLeaf(models.Model):
    """One entry of the log: a decision or an audit-trail entry, by kind and reference.

    Written by whoever records the entry, in the same transaction: ``leaf`` is the entry's
    canonical leaf (its non-personal fields and a salted digest of the rest, so it may be kept
    and handed out in receipts) and ``leaf_hash`` its RFC 9162 hash. ``idx`` stays empty until
    the sequencer integrates it. ``removed`` says why the entry's row is lawfully gone (a
    retention purge, an erasure of audit entries): the leaf stays, so the tree still verifies
    and the removal can be checked against the kind's rules.
    """

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16)
    ref = models.CharField(max_length=64)
    leaf = models.BinaryField()
    leaf_hash = models.BinaryField(max_length=32)
    # For kinds whose personal part enters the leaf through a salted digest kept here.
    salt = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    idx = models.BigIntegerField(null=True, unique=True)
    integrated_at = models.DateTimeField(null=True)
    removed = models.CharField(max_length=16, blank=True)
    removed_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "ref"], name="log_leaf_once")]
        indexes = [
            models.Index(fields=["id"], condition=models.Q(idx=None), name="log_leaf_pending")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.ref} @ {self.idx}"


class LogNode(models.Model):
    """The hash of a perfect subtree: leaves ``[idx * 2**level, (idx + 1) * 2**level)``, level >= 1
    (level 0 is ``LogLeaf.leaf_hash``). Written once, by the sequencer."""

    pk = models.CompositePrimaryKey("level", "idx")
    level = models.PositiveSmallIntegerField()
    idx = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    def __str__(self) -> str:
        return f"node {self.level}/{self.idx}"


class LogCheckpoint(models.Model):
    """A signed tree head (C2SP checkpoint in a signed note), one per integration; all kept."""

    size = models.BigIntegerField(primary_key=True)
    root = models.BinaryField(max_length=32)
    note = models.TextField()
    key_id = models.CharField(max_length=8)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["size"]

    def __str__(self) -> str:
        return f"checkpoint {self.size}"


class LogLease(models.Model):
    """Who may sequence: one row per log; the holder renews ``expires`` (epoch seconds)."""

    name = models.CharField(max_length=32, primary_key=True)
    owner = models.CharField(max_length=64)
    expires = models.FloatField()
    acquired_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} held by {self.owner}"
