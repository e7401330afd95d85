"""Inference backends: where a version's model runs, chosen by ``INFERENCE_BACKEND``.

One instance per process, created on first use (never at import or in ``AppConfig.ready``), so
that management commands and tests that never predict pay nothing for torch or models.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.inference.backends.base import Backend, BackendUnavailable

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "get_backend", "reset_backends"]


def _local() -> Backend:
    from apps.inference.backends.local import LocalBackend

    return LocalBackend()


def _torchserve() -> Backend:
    from apps.inference.backends.torchserve import TorchServeBackend

    return TorchServeBackend()


# name -> factory (factories import their module lazily).
BACKENDS: dict[str, Callable[[], Backend]] = {"local": _local, "torchserve": _torchserve}

_lock = threading.Lock()
# name -> (pid that created it, backend): a forked child must not reuse its parent's threads.
_instances: dict[str, tuple[int, Backend]] = {}


def get_backend(name: str | None = None) -> Backend:
    """The process-wide backend called ``name`` (default: the ``INFERENCE_BACKEND`` setting)."""
    name = name or str(getattr(settings, "INFERENCE_BACKEND", "local"))
    pid = os.getpid()
    found = _instances.get(name)
    if found is not None and found[0] == pid:
        return found[1]
    with _lock:
        found = _instances.get(name)
        if found is not None and found[0] == pid:
            return found[1]
        try:
            factory = BACKENDS[name]
        except KeyError:
            raise ImproperlyConfigured(
                f"INFERENCE_BACKEND {name!r} is not one of {', '.join(sorted(BACKENDS))}"
            ) from None
        backend = factory()
        _instances[name] = (pid, backend)
        return backend


def reset_backends() -> None:
    """Forget every backend instance, stopping what they run (tests; settings changed)."""
    with _lock:
        instances = list(_instances.values())
        _instances.clear()
    pid = os.getpid()
    for owner, backend in instances:
        close = getattr(backend, "close", None)
        if owner == pid and callable(close):
            close()
