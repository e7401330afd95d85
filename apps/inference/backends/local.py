"""The in-process backend: verified models loaded lazily, requests micro-batched per version.

Why batch in-process: a tiny model's forward pass costs about as much for 30 rows as for one,
so concurrent requests (threads of a WSGI worker) share one pass instead of queueing for the
interpreter one by one. Each version gets one daemon thread (its batcher) that gathers pending
requests for up to ``LOCAL_BATCH_MAX_WAIT_MS`` or ``LOCAL_BATCH_MAX_ROWS`` rows, runs one forward
pass and hands each caller its own rows. The batcher also stops waiting as soon as every caller
currently inside ``predict`` for that version is in the batch, so a lone caller pays no wait
(``LOCAL_BATCH_EARLY_CLOSE``, default on; off, it always waits out the delay as TorchServe does).

Nothing here loads at import: torch is imported by the first load, in the calling thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.utils.asyncio import async_unsafe

from apps.inference.backends.base import BackendUnavailable
from apps.registry import encoding, loading

if TYPE_CHECKING:
    from torch import nn

    from apps.registry.models import ModelVersion

logger = logging.getLogger(__name__)

# (version pk, artifact sha256): a changed artifact can never be served from a stale module.
ModelKey = tuple[int, str]
Probabilities = list[list[float]]


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


@dataclass
class BatchStats:
    """Counters of one batcher (or a sum of them), for tests and metrics."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    largest_batch: int = 0
    failed_batches: int = 0

    def add(self, other: BatchStats) -> None:
        self.batches += other.batches
        self.requests += other.requests
        self.rows += other.rows
        self.largest_batch = max(self.largest_batch, other.largest_batch)
        self.failed_batches += other.failed_batches


@dataclass
class _Request:
    """Encoded rows of one caller and the future its result is delivered through."""

    inputs: np.ndarray
    future: Future[Probabilities] = field(default_factory=Future)


class _BatcherClosed(Exception):
    """The batcher was stopped (the version was unloaded) between lookup and submit."""


class _Batcher:
    """One thread running one version's forward passes, a batch of pending requests at a time."""

    def __init__(
        self,
        *,
        module: nn.Module,
        n_labels: int,
        name: str,
        max_rows: int,
        max_wait_s: float,
        torch_threads: int,
        early_close: bool,
        forward: Callable[[nn.Module, np.ndarray], Any],
    ) -> None:
        self.module = module
        self.early_close = early_close
        self.n_labels = n_labels
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.torch_threads = torch_threads
        self._forward = forward
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        # Callers between entering predict and receiving their result; read without the lock
        # by the batcher thread (an int read is atomic), written under it.
        self._active = 0
        self._stats = BatchStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- caller side ---------------------------------------------------------------------

    def enter(self) -> None:
        with self._lock:
            if self._closed:
                raise _BatcherClosed
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

    def submit(self, inputs: np.ndarray) -> Future[Probabilities]:
        request = _Request(inputs)
        with self._lock:
            # Under the lock with stop(): whatever is queued before the sentinel is served.
            if self._closed:
                raise _BatcherClosed
            self._queue.put(request)
        return request.future

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def queue_size(self) -> int:
        return self._queue.qsize()

    def stats(self) -> BatchStats:
        with self._lock:
            return BatchStats(**asdict(self._stats))

    # --- batcher thread ------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        # Process-wide in practice (torch keeps one intra-op setting); set here so that it is
        # in force before the first forward pass, without touching torch at import time.
        if torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        carried: _Request | None = None
        stopping = False
        while not stopping:
            first = carried if carried is not None else self._queue.get()
            carried = None
            if first is None:
                break
            batch, carried, stopping = self._gather(first)
            if batch:
                self._run_batch(batch)

    def _gather(self, first: _Request) -> tuple[list[_Request], _Request | None, bool]:
        """Requests for one forward pass, the one that did not fit, and whether to stop."""
        batch: list[_Request] = []
        rows = 0
        if first.future.set_running_or_notify_cancel():
            batch.append(first)
            rows = len(first.inputs)
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_rows and (not self.early_close or len(batch) < self._active):
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if item is None:
                return batch, None, True
            if not item.future.set_running_or_notify_cancel():
                continue  # its caller gave up waiting
            if batch and rows + len(item.inputs) > self.max_rows:
                # Never exceed max_rows by joining; a request larger than max_rows alone is
                # still served, as its own batch.
                return batch, item, False
            batch.append(item)
            rows += len(item.inputs)
        return batch, None, False

    def _run_batch(self, batch: list[_Request]) -> None:
        rows = sum(len(r.inputs) for r in batch)
        try:
            parts = [r.inputs for r in batch]
            inputs = parts[0] if len(parts) == 1 else np.concatenate(parts)
            probabilities = np.asarray(self._forward(self.module, inputs))
            if probabilities.shape != (rows, self.n_labels):
                raise RuntimeError(
                    f"the model returned shape {probabilities.shape}, "
                    f"expected ({rows}, {self.n_labels})"
                )
        except BaseException as exc:
            logger.exception("forward pass of %d rows failed", rows)
            with self._lock:
                self._stats.batches += 1
                self._stats.failed_batches += 1
                self._stats.requests += len(batch)
                self._stats.rows += rows
            for request in batch:
                request.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        with self._lock:
            self._stats.batches += 1
            self._stats.requests += len(batch)
            self._stats.rows += rows
            self._stats.largest_batch = max(self._stats.largest_batch, rows)
        start = 0
        for request in batch:
            end = start + len(request.inputs)
            request.future.set_result(probabilities[start:end].tolist())
            start = end


@dataclass
class _Loaded:
    """A verified module of one version and the batcher serving it."""

    key: ModelKey
    label: str
    signature: dict[str, Any]
    batcher: _Batcher
    loaded_at: float


class LocalBackend:
    """Runs verified models in this process, one micro-batching thread per loaded version.

    Models load lazily, once per process per (version, artifact hash): concurrent first callers
    wait for a single load, and a refused artifact caches nothing. Callers block on a future, so
    this must be used from a thread (a sync view), never on an event loop.
    """

    name = "local"

    def __init__(
        self,
        *,
        max_rows: int | None = None,
        max_wait_ms: float | None = None,
        torch_threads: int | None = None,
        timeout_s: float | None = None,
        early_close: bool | None = None,
    ) -> None:
        self.max_rows = int(max_rows or _setting("LOCAL_BATCH_MAX_ROWS", 64))
        wait_ms = _setting("LOCAL_BATCH_MAX_WAIT_MS", 2) if max_wait_ms is None else max_wait_ms
        self.max_wait_s = float(wait_ms) / 1000
        self.torch_threads = int(torch_threads or _setting("LOCAL_TORCH_THREADS", 1))
        self.timeout_s = float(timeout_s or _setting("LOCAL_PREDICT_TIMEOUT_S", 10))
        self.early_close = bool(
            _setting("LOCAL_BATCH_EARLY_CLOSE", True) if early_close is None else early_close
        )
        self._models: dict[ModelKey, _Loaded] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[ModelKey, threading.Lock] = {}
        self._retired = BatchStats()

    # --- Backend -------------------------------------------------------------------------

    @async_unsafe
    def load(self, version: ModelVersion) -> None:
        self._loaded(version)

    @async_unsafe
    def predict(self, version: ModelVersion, rows: list[dict[str, Any]]) -> Probabilities:
        if not rows:
            return []
        for _ in range(3):
            entry = self._loaded(version)
            try:
                return self._predict_on(entry, rows)
            except _BatcherClosed:
                continue  # unloaded meanwhile: load again
        raise BackendUnavailable("The model was unloaded repeatedly while predicting.")

    def health(self) -> dict[str, Any]:
        with self._lock:
            entries = list(self._models.values())
        return {
            "backend": self.name,
            "status": "ok" if all(e.batcher.alive for e in entries) else "degraded",
            "settings": {
                "max_rows": self.max_rows,
                "max_wait_ms": self.max_wait_s * 1000,
                "torch_threads": self.torch_threads,
                "timeout_s": self.timeout_s,
                "early_close": self.early_close,
            },
            "loaded": [
                {
                    "version_id": e.key[0],
                    "version": e.label,
                    "artifact_sha256": e.key[1],
                    "queue_size": e.batcher.queue_size(),
                    "batcher_alive": e.batcher.alive,
                    "stats": asdict(e.batcher.stats()),
                }
                for e in entries
            ],
            "stats": asdict(self.stats()),
        }

    def unload(self, version: ModelVersion) -> None:
        with self._lock:
            keys = [k for k in self._models if k[0] == version.pk]
            removed = [self._models.pop(k) for k in keys]
        for entry in removed:
            self._retire(entry)

    # --- beyond the protocol -------------------------------------------------------------

    def stats(self, version: ModelVersion | None = None) -> BatchStats:
        """Counters of one loaded version, or of everything this backend ever ran."""
        with self._lock:
            entries = list(self._models.values())
            total = BatchStats(**asdict(self._retired))
        if version is not None:
            total = BatchStats()
            entries = [e for e in entries if e.key[0] == version.pk]
        for entry in entries:
            total.add(entry.batcher.stats())
        return total

    def close(self) -> None:
        """Stop every batcher (tests, and a backend being replaced)."""
        with self._lock:
            removed = list(self._models.values())
            self._models.clear()
        for entry in removed:
            self._retire(entry)

    # --- internals -----------------------------------------------------------------------

    def _predict_on(self, entry: _Loaded, rows: list[dict[str, Any]]) -> Probabilities:
        # Encoded in the caller's thread: a row that cannot be encoded fails its own
        # request only, and the batcher thread is left with the forward pass alone.
        batcher = entry.batcher
        batcher.enter()  # before encoding, so that the batcher knows this request is coming
        try:
            inputs = encoding.encode(entry.signature, rows)
            future = batcher.submit(inputs)
            try:
                return future.result(timeout=self.timeout_s)
            except FutureTimeout as exc:
                future.cancel()
                raise BackendUnavailable(
                    f"The model {entry.label} did not answer within {self.timeout_s:g} s.",
                    retry_after=max(1, round(self.timeout_s)),
                ) from exc
        finally:
            batcher.leave()

    def _loaded(self, version: ModelVersion) -> _Loaded:
        key: ModelKey = (version.pk, version.artifact_sha256)
        entry = self._models.get(key)
        if entry is not None:
            if entry.batcher.alive:
                return entry
            # Its thread died (or this is a forked child that inherited the entry): reload.
            with self._lock:
                dead = self._models.pop(key, None)
            if dead is not None:
                self._retire(dead)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            entry = self._models.get(key)
            if entry is not None and entry.batcher.alive:
                return entry
            # Raises ArtifactTampered/ArtifactMissing (and records the alert): nothing cached.
            module = loading.load_version(version)
            labels = version.signature["output"]["labels"]
            entry = _Loaded(
                key=key,
                label=f"{version.family_id}/{version.version}",
                signature=version.signature,
                batcher=_Batcher(
                    module=module,
                    n_labels=len(labels),
                    name=f"gatehouse-batcher-{version.pk}",
                    max_rows=self.max_rows,
                    max_wait_s=self.max_wait_s,
                    torch_threads=self.torch_threads,
                    early_close=self.early_close,
                    forward=loading.predict_proba,
                ),
                loaded_at=time.time(),
            )
            with self._lock:
                # Another artifact of the same version (re-registered) is no longer served.
                stale = [self._models.pop(k) for k in list(self._models) if k[0] == key[0]]
                self._models[key] = entry
            for old in stale:
                self._retire(old)
            logger.info("loaded model %s (sha256 %s)", entry.label, key[1][:12])
            return entry

    def _retire(self, entry: _Loaded) -> None:
        entry.batcher.stop()
        with self._lock:
            self._retired.add(entry.batcher.stats())
        logger.info("unloaded model %s", entry.label)
