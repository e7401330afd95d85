"""The sequencer: integrates queued leaves into the tree in batches and signs a checkpoint.

Exactly one is active per deployment: it holds the ``LogLease`` row and renews it every pass;
any number stand by and take over when the lease runs out (the holder died or hung). Each pass
is one transaction that re-checks the lease, numbers the oldest queued leaves in id order,
stores the new interior nodes and a signed checkpoint: killed anywhere, it leaves the tree as
it was, and the next pass (here or in a stand-by) integrates the same leaves.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from gatehouse.tlog import signing, tree
from gatehouse.tlog.models import LogCheckpoint, LogLeaf, LogLease, LogNode
from gatehouse.tlog.verify import EMPTY_ROOT, fold, push

logger = logging.getLogger(__name__)

LEASE_NAME = "decisions"
# Consecutive failed passes after which the holder gives the lease up to a stand-by.
MAX_FAILED_PASSES = 3


class LeaseLost(Exception):
    """Another sequencer holds the lease: this one must not write."""


@dataclass(frozen=True)
class Pass:
    integrated: int
    size: int
    checkpoint: LogCheckpoint | None


# Called after a checkpoint committed (witness export); registered at start-up.
checkpoint_listeners: list[Callable[[LogCheckpoint], None]] = []


class Sequencer:
    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.size = -1  # unknown until loaded
        self.frontier: list[tuple[int, bytes]] = []  # (level, hash) of the right edge

    # --- lease -----------------------------------------------------------------------------
    def acquire(self) -> bool:
        """Take or renew the lease; True when this sequencer holds it now."""
        now = time.time()
        expires = now + settings.LOG_LEASE_S
        renewed = LogLease.objects.filter(name=LEASE_NAME, owner=self.owner).update(expires=expires)
        if renewed:
            return True
        taken = LogLease.objects.filter(name=LEASE_NAME, expires__lt=now).update(
            owner=self.owner, expires=expires, acquired_at=timezone.now()
        )
        if not taken:
            if LogLease.objects.filter(name=LEASE_NAME).exists():
                return False
            _, created = LogLease.objects.get_or_create(
                name=LEASE_NAME, defaults={"owner": self.owner, "expires": expires}
            )
            if not created:
                return False
        logger.info("sequencer %s took the lease", self.owner)
        self.size = -1  # another sequencer may have grown the tree meanwhile
        return True

    def release(self) -> None:
        LogLease.objects.filter(name=LEASE_NAME, owner=self.owner).update(expires=0)

    def _step_down(self) -> None:
        try:
            self.release()
        except Exception:
            logger.exception("sequencer %s could not release its lease", self.owner)
        self.size = -1

    def _fence(self) -> None:
        """Inside the pass's transaction: renew the lease or stop. The row stays locked until
        commit, so a stand-by cannot take it over in the middle of a pass."""
        updated = LogLease.objects.filter(
            name=LEASE_NAME, owner=self.owner, expires__gt=time.time()
        ).update(expires=time.time() + settings.LOG_LEASE_S)
        if not updated:
            raise LeaseLost(self.owner)

    # --- tree state ------------------------------------------------------------------------
    def _load(self) -> None:
        size = tree.integrated_size()
        coords = tree.frontier_coords(size)
        nodes = tree.read_nodes(coords)
        self.size = size
        self.frontier = [(level, nodes[(level, idx)]) for level, idx in coords]

    def _append(self, leaf: bytes, new_nodes: list[tuple[int, int, bytes]]) -> None:
        made = push(self.frontier, leaf)
        new_nodes.extend((level, self.size >> level, node) for level, node in made)
        self.size += 1

    def root(self) -> bytes:
        return fold(h for _, h in self.frontier) if self.frontier else EMPTY_ROOT

    # --- one pass --------------------------------------------------------------------------
    def integrate(self, limit: int | None = None) -> Pass:
        """Integrate up to ``limit`` queued leaves (LOG_BATCH_SIZE) and sign a checkpoint when
        the tree grew or has none yet. Call while holding the lease."""
        limit = limit or settings.LOG_BATCH_SIZE
        try:
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    # A pass that hangs must not hold the lease row (and so every stand-by)
                    # forever: the server ends a stuck statement or an idle open transaction.
                    limit_ms = int(settings.LOG_LEASE_S * 1000)
                    with connection.cursor() as cursor:
                        cursor.execute(
                            f"SET LOCAL idle_in_transaction_session_timeout = {limit_ms}"
                        )
                        cursor.execute(f"SET LOCAL statement_timeout = {10 * limit_ms}")
                self._fence()
                if self.size != tree.integrated_size():  # first pass, or the tree moved on
                    self._load()
                start = self.size
                pending = list(
                    LogLeaf.objects.filter(idx=None)
                    .order_by("id")
                    .values_list("id", "leaf_hash")[:limit]
                )
                new_nodes: list[tuple[int, int, bytes]] = []
                numbered = []
                for leaf_id, leaf in pending:
                    numbered.append((self.size, leaf_id))
                    self._append(bytes(leaf), new_nodes)
                if numbered:
                    self._write(numbered, new_nodes)
                latest = LogCheckpoint.objects.order_by("-size").values_list("size", flat=True)
                last = latest.first()
                checkpoint = None
                if self.size > 0 and (last is None or last < self.size):
                    root = self.root()
                    checkpoint = LogCheckpoint.objects.create(
                        size=self.size,
                        root=root,
                        note=signing.sign_checkpoint(self.size, root),
                        key_id=signing.signer().verifier.id.hex(),
                    )
                # Renewed again at the end: a pass longer than the lease must not commit with it
                # run out (drain() would stop, a stand-by would take over between passes). The
                # row is locked since the fence, so it is still this sequencer's.
                LogLease.objects.filter(name=LEASE_NAME, owner=self.owner).update(
                    expires=time.time() + settings.LOG_LEASE_S
                )
        except BaseException:
            self.size = -1  # reload from the database next time
            raise
        if checkpoint is not None:
            for listener in checkpoint_listeners:
                try:
                    listener(checkpoint)
                except Exception:
                    logger.exception("checkpoint listener %s failed", listener)
        return Pass(self.size - start, self.size, checkpoint)

    def _write(
        self, numbered: list[tuple[int, int]], new_nodes: list[tuple[int, int, bytes]]
    ) -> None:
        leaves = LogLeaf._meta.db_table
        nodes = LogNode._meta.db_table
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # One statement each for the leaves and the nodes, arrays through unnest():
                # executemany would send a statement per leaf and per node (about 10,000 per
                # pass of 5,000), each bound, planned and run on its own (14.7k -> 34.6k
                # leaves/s, make bench-log).
                cursor.execute(
                    f"UPDATE {leaves} AS leaf SET idx = v.idx, integrated_at = %s "  # noqa: S608
                    "FROM unnest(%s::bigint[], %s::bigint[]) AS v(idx, id) "
                    "WHERE leaf.id = v.id AND leaf.idx IS NULL",
                    [now, [idx for idx, _ in numbered], [leaf_id for _, leaf_id in numbered]],
                )
                self._check_numbered(cursor.rowcount, numbered)
                if new_nodes:
                    cursor.execute(
                        f"INSERT INTO {nodes} (level, idx, hash) "  # noqa: S608
                        "SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[])",
                        [
                            [n[0] for n in new_nodes],
                            [n[1] for n in new_nodes],
                            [n[2] for n in new_nodes],
                        ],
                    )
                return
            cursor.executemany(
                f"UPDATE {leaves} SET idx = %s, integrated_at = %s WHERE id = %s AND idx IS NULL",  # noqa: S608
                [(idx, now, leaf_id) for idx, leaf_id in numbered],
            )
            self._check_numbered(cursor.rowcount, numbered)
            if new_nodes:
                cursor.executemany(
                    f"INSERT INTO {nodes} (level, idx, hash) VALUES (%s, %s, %s)",  # noqa: S608
                    new_nodes,
                )

    @staticmethod
    def _check_numbered(updated: int, numbered: list[tuple[int, int]]) -> None:
        # Every leaf read as queued must be numbered by this pass, or the nodes just computed
        # would not be the tree's: roll the pass back (the lease makes this unreachable).
        if updated != len(numbered):
            raise RuntimeError(f"{len(numbered) - updated} leaves were numbered by another writer")

    def drain(self) -> int:
        """Integrate everything queued now, then let the lease go (tests, commands); returns
        how many. Raises LeaseLost while another sequencer is active."""
        if not self.acquire():
            raise LeaseLost(self.owner)
        total = 0
        try:
            while True:
                step = self.integrate()
                total += step.integrated
                if step.integrated < settings.LOG_BATCH_SIZE:
                    return total
        finally:
            self.release()

    # --- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Stand by or sequence until ``stop`` is set: a pass every half maximum merge delay
        (at once again while a full batch was found)."""
        interval = settings.LOG_MAX_MERGE_DELAY_S / 2
        holding, failures = False, 0
        while not stop.is_set():
            busy = False
            try:
                close_old_connections()
                holding = self.acquire()
                if holding:
                    busy = self.integrate().integrated >= settings.LOG_BATCH_SIZE
                failures = 0
            except LeaseLost:
                holding = False
                logger.warning("sequencer %s lost the lease", self.owner)
            except Exception:
                failures += 1
                logger.exception("sequencer pass failed (%d in a row)", failures)
                if holding and failures >= MAX_FAILED_PASSES:
                    # Let a stand-by try (another host, another connection); stand by meanwhile.
                    self._step_down()
                    holding = False
                    stop.wait(2 * settings.LOG_LEASE_S)
            if not busy:
                stop.wait(interval if holding else min(1.0, settings.LOG_LEASE_S / 3))
        if holding:
            try:
                self.release()
            except Exception:
                logger.exception("sequencer could not release its lease")
        connection.close()


_thread: threading.Thread | None = None
_stop = threading.Event()


def start_in_background() -> threading.Thread | None:
    """Run a sequencer (active or stand-by) in a daemon thread of this process, once
    (``LOG_SEQUENCER_EMBEDDED``: the web processes of ``make run``)."""
    global _thread
    if _thread is not None or not settings.LOG_SEQUENCER_EMBEDDED:
        return _thread
    _thread = threading.Thread(
        target=Sequencer().run, args=(_stop,), name="log-sequencer", daemon=True
    )
    _thread.start()
    atexit.register(stop_background)  # hand the lease over at once when the process ends
    return _thread


def stop_background() -> None:
    global _thread
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=10)
    _thread = None
    _stop.clear()
