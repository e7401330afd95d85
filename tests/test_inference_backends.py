"""The in-process inference backend: verified lazy loading, micro-batching, failures, timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from django.core.exceptions import ImproperlyConfigured, SynchronousOnlyOperation

from apps.inference.backends import Backend, BackendUnavailable, get_backend, reset_backends
from apps.inference.backends.local import LocalBackend
from apps.registry import encoding, loading
from apps.registry.artifacts import ArtifactStore, ArtifactTampered
from apps.registry.loading import load_version as unpatched_load_version
from gatehouse.models import Alert
from tests.registry_models import register

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _artifact_store(settings: Any, tmp_path: Any) -> Iterator[None]:
    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"
    reset_backends()
    yield
    reset_backends()


@pytest.fixture
def version(family: Any) -> Any:
    return register(family, family.owner)


@pytest.fixture
def make_backend() -> Iterator[Callable[..., LocalBackend]]:
    made: list[LocalBackend] = []

    def make(**kwargs: Any) -> LocalBackend:
        backend = LocalBackend(**kwargs)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Counts calls of ``load_version``; each loaded module is appended."""
    calls: list[Any] = []
    real = loading.load_version

    def counting(version: Any) -> Any:
        time.sleep(0.05)  # widen the window in which concurrent first callers could race
        module = real(version)
        calls.append(module)
        return module

    monkeypatch.setattr(loading, "load_version", counting)
    return calls


class Gated(torch.nn.Module):
    """Wraps the real model: forward passes can be held at a gate, and one can be made to fail."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls = 0
        self.fail_on_call = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        call = self.calls
        self.entered.set()
        self.gate.wait(10)
        if call == self.fail_on_call:
            raise RuntimeError("forward pass exploded")
        return self.inner(x)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> dict[str, Gated]:
    """The module of the version once loaded, as ``gated["module"]``."""
    holder: dict[str, Gated] = {}
    real = loading.load_version

    def load(version: Any) -> Any:
        holder["module"] = Gated(real(version))
        return holder["module"]

    monkeypatch.setattr(loading, "load_version", load)
    return holder


def rows(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "income": round(float(rng.uniform(5, 120)), 2),
            "age": int(rng.integers(18, 90)),
            "housing": str(rng.choice(["own", "rent", "free"])),
            "sex": str(rng.choice(["female", "male"])),
        }
        for _ in range(n)
    ]


def reference(version: Any, data: list[dict[str, Any]]) -> np.ndarray:
    module = unpatched_load_version(version)  # not counted by the `loads` fixture
    return np.asarray(loading.predict_proba(module, encoding.encode(version.signature, data)))


def run_threads(n: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``n`` threads released together; results or exceptions, in order."""
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def batcher_threads(version: Any) -> list[threading.Thread]:
    name = f"gatehouse-batcher-{version.pk}"
    return [t for t in threading.enumerate() if t.name == name]


# --- Selection -----------------------------------------------------------------------------


def test_get_backend_returns_one_instance_per_process_until_reset(settings: Any) -> None:
    settings.INFERENCE_BACKEND = "local"
    backend = get_backend()
    assert isinstance(backend, LocalBackend)
    assert isinstance(backend, Backend)
    assert get_backend() is backend
    assert get_backend("local") is backend
    reset_backends()
    assert get_backend() is not backend


def test_an_unknown_backend_name_is_a_configuration_error(settings: Any) -> None:
    settings.INFERENCE_BACKEND = "nonesuch"
    with pytest.raises(ImproperlyConfigured, match="nonesuch"):
        get_backend()


def test_backend_unavailable_is_a_503_with_retry_after() -> None:
    exc = BackendUnavailable("busy", retry_after=3)
    assert (exc.status_code, exc.error_code, exc.headers) == (
        503,
        "backend_unavailable",
        {"Retry-After": "3"},
    )


# --- Predictions and loading ---------------------------------------------------------------


def test_predictions_equal_the_registry_reference(version: Any, make_backend: Any) -> None:
    backend = make_backend()
    data = rows(20)
    got = backend.predict(version, data)
    expected = reference(version, data)
    assert len(got) == 20
    assert all(len(p) == len(version.signature["output"]["labels"]) for p in got)
    np.testing.assert_allclose(np.array(got), expected, atol=1e-6, rtol=0)
    assert backend.predict(version, []) == []


def test_the_model_is_loaded_once_for_concurrent_first_callers(
    version: Any, make_backend: Any, loads: list[Any]
) -> None:
    backend = make_backend()
    data = rows(8)
    results = run_threads(8, lambda i: backend.predict(version, [data[i]]))
    assert len(loads) == 1
    assert not [r for r in results if isinstance(r, Exception)]
    np.testing.assert_allclose(
        np.array([r[0] for r in results]), reference(version, data), atol=1e-6, rtol=0
    )
    backend.load(version)  # already loaded: no new load
    assert len(loads) == 1
    (loaded,) = backend.health()["loaded"]
    assert (loaded["version_id"], loaded["artifact_sha256"]) == (
        version.pk,
        version.artifact_sha256,
    )


def test_concurrent_single_row_requests_share_forward_passes(
    version: Any, make_backend: Any
) -> None:
    backend = make_backend(max_wait_ms=50)
    backend.load(version)
    data = rows(32, seed=5)
    results = run_threads(32, lambda i: backend.predict(version, [data[i]]))
    assert not [r for r in results if isinstance(r, Exception)]
    # Each caller got its own row back, not a neighbour's.
    np.testing.assert_allclose(
        np.array([r[0] for r in results]), reference(version, data), atol=1e-6, rtol=0
    )
    stats = backend.stats(version)
    assert (stats.requests, stats.rows, stats.failed_batches) == (32, 32, 0)
    assert stats.batches < 32
    assert stats.largest_batch > 1
    assert backend.health()["stats"]["batches"] == stats.batches


def test_a_request_larger_than_max_rows_is_one_batch_of_its_own(
    version: Any, make_backend: Any
) -> None:
    backend = make_backend(max_rows=4)
    data = rows(10)
    got = backend.predict(version, data)
    np.testing.assert_allclose(np.array(got), reference(version, data), atol=1e-6, rtol=0)
    stats = backend.stats(version)
    assert (stats.batches, stats.largest_batch) == (1, 10)


def test_a_lone_caller_does_not_wait_for_the_batch_delay(version: Any, make_backend: Any) -> None:
    eager = make_backend(max_wait_ms=300)
    eager.load(version)
    started = time.monotonic()
    eager.predict(version, rows(1))
    assert time.monotonic() - started < 0.25

    patient = make_backend(max_wait_ms=300, early_close=False)
    patient.load(version)
    started = time.monotonic()
    patient.predict(version, rows(1))
    assert time.monotonic() - started >= 0.29


def test_a_tampered_artifact_is_refused_and_nothing_is_cached(
    version: Any, make_backend: Any
) -> None:
    path = ArtifactStore().path(version.artifact_sha256)
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    backend = make_backend()
    with pytest.raises(ArtifactTampered):
        backend.predict(version, rows(1))
    assert backend.health()["loaded"] == []
    assert batcher_threads(version) == []
    assert Alert.objects.filter(kind="artifact_integrity", severity="critical").exists()
    with pytest.raises(ArtifactTampered):  # refused again, not served from a cache
        backend.predict(version, rows(1))


def test_unload_drops_the_model_and_a_later_predict_loads_it_again(
    version: Any, make_backend: Any, loads: list[Any]
) -> None:
    backend = make_backend()
    first = backend.predict(version, rows(3))
    assert len(loads) == 1
    assert len(batcher_threads(version)) == 1
    backend.unload(version)
    assert backend.health()["loaded"] == []
    assert batcher_threads(version) == []
    assert backend.stats().batches == 1  # kept after unload
    assert backend.predict(version, rows(3)) == first
    assert len(loads) == 2
    assert backend.stats().batches == 2


# --- Failures ------------------------------------------------------------------------------


def test_a_failed_forward_pass_reaches_every_caller_of_its_batch_and_serving_goes_on(
    version: Any, make_backend: Any, gated: dict[str, Gated]
) -> None:
    backend = make_backend()
    backend.load(version)
    module: Gated = gated["module"]
    module.gate.clear()
    holder = threading.Thread(target=backend.predict, args=(version, rows(1)))
    holder.start()
    assert module.entered.wait(5)  # the batcher is busy with the first request

    def queue_size() -> int:
        return int(backend.health()["loaded"][0]["queue_size"])

    module.fail_on_call = 2
    done: list[Any] = []
    waiter = threading.Thread(
        target=lambda: done.extend(run_threads(5, lambda i: backend.predict(version, rows(1, i))))
    )
    waiter.start()
    wait_until(lambda: queue_size() == 5)
    module.gate.set()
    holder.join(10)
    waiter.join(10)

    assert len(done) == 5
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in done)
    data = rows(2)
    np.testing.assert_allclose(
        np.array(backend.predict(version, data)), reference(version, data), atol=1e-6, rtol=0
    )
    stats = backend.stats(version)
    assert (stats.batches, stats.failed_batches, stats.requests) == (3, 1, 7)
    assert backend.health()["status"] == "ok"


def test_a_caller_waiting_past_the_timeout_gets_backend_unavailable(
    version: Any, make_backend: Any, gated: dict[str, Gated]
) -> None:
    backend = make_backend(timeout_s=0.2)
    backend.load(version)
    module: Gated = gated["module"]
    module.gate.clear()
    results = run_threads(1, lambda i: backend.predict(version, rows(1)))
    assert module.entered.wait(5)
    # A second caller, queued behind the stuck pass, gives up too; its request is dropped.
    queued = run_threads(1, lambda i: backend.predict(version, rows(1)))
    for result in (*results, *queued):
        assert isinstance(result, BackendUnavailable)
        assert result.error_code == "backend_unavailable"
        assert result.headers["Retry-After"] == "1"
    module.gate.set()
    wait_until(lambda: backend.stats(version).batches == 1)
    assert backend.predict(version, rows(1))
    stats = backend.stats(version)
    assert (stats.batches, stats.requests) == (2, 2)  # the abandoned queued request never ran


async def test_predict_refuses_to_run_on_an_event_loop(version: Any, make_backend: Any) -> None:
    backend = make_backend()
    with pytest.raises(SynchronousOnlyOperation):
        backend.predict(version, rows(1))
