"""The TorchServe backend: versions served by a TorchServe instance over its HTTP APIs.

Gatehouse and TorchServe share the model store (``TORCHSERVE_MODEL_STORE``): TorchServe has no
upload API, only ``url=<file in its store>``. A version is loaded by copying its verified .mar
(``ModelVersion.mar_sha256``) there as ``<slug>.<version>.mar`` and registering it through the
management API; it then answers at ``/predictions/<slug>/<version>``. Loading is lazy, once per
process, like the in-process backend.

TorchServe is archived upstream (no security patches): it is treated as an untrusted, frozen
component behind a narrow interface. Every call goes through a circuit breaker, so that a dead
or hung TorchServe costs callers one timeout each until the breaker opens, and nothing after.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx
import pybreaker
from django.conf import settings
from django.utils.asyncio import async_unsafe

from apps.inference.backends.base import BackendUnavailable
from gatehouse.errors import Conflict, ValidationFailed

if TYPE_CHECKING:
    from apps.registry.models import ModelVersion

logger = logging.getLogger(__name__)

Api = Literal["inference", "management"]
Probabilities = list[list[float]]
MANIFEST_NAME = "gatehouse_model.json"  # written into every archive by apps.registry.packaging
MAX_FIELD_ERRORS = 100


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _q(part: str) -> str:
    return quote(part, safe="")


def _message(response: httpx.Response) -> str:
    """TorchServe's error message (``{"code", "type", "message"}``), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)[:300]
    return str(body)[:300]


def _is_invalid_key(response: httpx.Response) -> bool:
    # TorchServe answers a missing, wrong or expired token with 400 InvalidKeyException.
    if response.status_code != 400:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("type") == "InvalidKeyException"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Target:
    """Where a loaded version answers: TorchServe model name and version."""

    name: str
    version: str
    mar_sha256: str
    loaded_at: float


class _Keys:
    """Bearer tokens per API: from ``TORCHSERVE_KEY_FILE`` (TorchServe's key_file.json, re-read
    after a rotation) or from ``TORCHSERVE_TOKEN`` / ``TORCHSERVE_MANAGEMENT_TOKEN``."""

    def __init__(self, *, inference: str, management: str, key_file: str) -> None:
        self._static = {"inference": inference, "management": management}
        self.key_file = Path(key_file) if key_file else None
        self._from_file: dict[str, str] | None = None
        self._lock = threading.Lock()

    def get(self, api: Api) -> str:
        if self.key_file is None:
            return self._static[api]
        if self._from_file is None:
            self.reload()
        return (self._from_file or {}).get(api, "")

    def reload(self) -> bool:
        """Read the key file again; True if a key changed (worth retrying the call)."""
        if self.key_file is None:
            return False
        try:
            data = json.loads(self.key_file.read_text())
            keys = {api: str(data[api]["key"]) for api in ("inference", "management")}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.error("cannot read TorchServe keys from %s: %s", self.key_file, exc)
            keys = {}
        with self._lock:
            changed = keys != self._from_file
            self._from_file = keys
        return changed and bool(keys)


class _Gate(pybreaker.CircuitBreakerListener):
    """A ``pybreaker.CircuitBreaker`` used for its bookkeeping only.

    ``CircuitBreaker.call`` holds the breaker's lock for the whole guarded call: every request
    would queue behind a slow one, and an open breaker could not answer while a hung call
    holds the lock. So the HTTP call runs outside it, and only its outcome goes through
    ``call`` (a failure re-raised, or a no-op), which lets pybreaker count, open, half-open and
    close as usual. While open, calls are refused here, before any network I/O; once
    ``reset_timeout`` has passed, one call at a time is let through as the half-open probe.
    """

    def __init__(self, *, fail_max: int, reset_timeout: float) -> None:
        self.reset_timeout = reset_timeout
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            name="torchserve",
            listeners=[self],
            throw_new_error_on_trip=False,
        )
        self._lock = threading.Lock()
        self._opened_at = 0.0
        self._probing = False

    # pybreaker.CircuitBreakerListener
    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        new = getattr(new_state, "name", None)
        if new == pybreaker.STATE_OPEN:
            self._opened_at = time.monotonic()
            logger.warning(
                "TorchServe circuit breaker opened after %d failures; calls refused for %g s",
                cb.fail_counter,
                self.reset_timeout,
            )
        elif new == pybreaker.STATE_CLOSED and old_state is not None:
            logger.info("TorchServe circuit breaker closed again")

    @property
    def state(self) -> str:
        return str(self.breaker.current_state)

    def remaining_s(self) -> float:
        return max(0.0, self._opened_at + self.reset_timeout - time.monotonic())

    def admit(self) -> bool:
        """Let a call through (True if it is the half-open probe) or raise BackendUnavailable."""
        if self.state == pybreaker.STATE_CLOSED:
            return False
        with self._lock:
            if self.state == pybreaker.STATE_OPEN and self.remaining_s() > 0:
                raise self._refusal()
            if self._probing:
                raise self._refusal()
            self._probing = True
        self.breaker.half_open()
        return True

    def release(self, probe: bool) -> None:
        if probe:
            with self._lock:
                self._probing = False

    # Not ``success``/``failure``: those names are listener callbacks of pybreaker.
    def record_success(self) -> None:
        # CircuitBreakerError: a call in flight when the breaker opened; it stays open.
        with contextlib.suppress(pybreaker.CircuitBreakerError):
            self.breaker.call(_noop)

    def record_failure(self, exc: BaseException) -> None:
        with contextlib.suppress(pybreaker.CircuitBreakerError, type(exc)):
            self.breaker.call(_reraise, exc)

    def _refusal(self) -> BackendUnavailable:
        wait = self.remaining_s()
        return BackendUnavailable(
            "TorchServe is failing; calls are suspended by the circuit breaker.",
            retry_after=max(1, math.ceil(wait or self.reset_timeout)),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "fail_counter": self.breaker.fail_counter,
            "fail_max": self.breaker.fail_max,
            "reset_timeout_s": self.reset_timeout,
            "retry_in_s": round(self.remaining_s(), 3) if self.state != "closed" else 0.0,
        }


def _noop() -> None:
    return None


def _reraise(exc: BaseException) -> None:
    raise exc


class TorchServeBackend:
    """Serves versions from TorchServe over HTTP (pooled connections, timeouts, breaker).

    Settings (read once, at construction): ``TORCHSERVE_INFERENCE_URL``,
    ``TORCHSERVE_MANAGEMENT_URL``, ``TORCHSERVE_TOKEN`` (``TORCHSERVE_MANAGEMENT_TOKEN``,
    ``TORCHSERVE_KEY_FILE``), ``TORCHSERVE_TIMEOUT_S``, ``TORCHSERVE_MODEL_STORE``,
    ``TORCHSERVE_WORKERS``, ``TORCHSERVE_BATCH_SIZE``, ``TORCHSERVE_MAX_BATCH_DELAY_MS``,
    ``TORCHSERVE_BREAKER_FAIL_MAX``, ``TORCHSERVE_BREAKER_RESET_S``,
    ``TORCHSERVE_FALLBACK_LOCAL``. Keyword arguments override them (tests).
    """

    name = "torchserve"

    def __init__(
        self,
        *,
        inference_url: str | None = None,
        management_url: str | None = None,
        token: str | None = None,
        timeout_s: float | None = None,
        model_store: Path | str | None = None,
        fail_max: int | None = None,
        reset_timeout_s: float | None = None,
        fallback_local: bool | None = None,
    ) -> None:
        self.inference_url = str(
            inference_url or _setting("TORCHSERVE_INFERENCE_URL", "http://127.0.0.1:18080")
        ).rstrip("/")
        self.management_url = str(
            management_url or _setting("TORCHSERVE_MANAGEMENT_URL", "http://127.0.0.1:18081")
        ).rstrip("/")
        inference_token = str(_setting("TORCHSERVE_TOKEN", "") if token is None else token)
        self._keys = _Keys(
            inference=inference_token,
            management=str(_setting("TORCHSERVE_MANAGEMENT_TOKEN", "") or inference_token),
            key_file=str(_setting("TORCHSERVE_KEY_FILE", "") or ""),
        )
        self.timeout_s = float(timeout_s or _setting("TORCHSERVE_TIMEOUT_S", 5))
        self.management_timeout_s = float(_setting("TORCHSERVE_MANAGEMENT_TIMEOUT_S", 120))
        self.model_store = Path(
            model_store or _setting("TORCHSERVE_MODEL_STORE", Path("var") / "model_store")
        )
        self.workers = int(_setting("TORCHSERVE_WORKERS", 1))
        self.batch_size = int(_setting("TORCHSERVE_BATCH_SIZE", 8))
        self.max_batch_delay_ms = int(_setting("TORCHSERVE_MAX_BATCH_DELAY_MS", 5))
        if fallback_local is None:
            fallback_local = bool(_setting("TORCHSERVE_FALLBACK_LOCAL", False))
        self.fallback_local = fallback_local
        self._gate = _Gate(
            fail_max=int(fail_max or _setting("TORCHSERVE_BREAKER_FAIL_MAX", 5)),
            reset_timeout=float(reset_timeout_s or _setting("TORCHSERVE_BREAKER_RESET_S", 10)),
        )
        max_connections = int(_setting("TORCHSERVE_MAX_CONNECTIONS", 64))
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            trust_env=False,  # an internal service: never through an HTTP(S)_PROXY
            follow_redirects=False,
        )
        self._loaded: dict[tuple[int, str], _Target] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[int, str], threading.Lock] = {}

    # --- Backend -------------------------------------------------------------------------

    @async_unsafe
    def load(self, version: ModelVersion) -> None:
        self._ensure_loaded(version)

    @async_unsafe
    def predict(self, version: ModelVersion, rows: list[dict[str, Any]]) -> Probabilities:
        if not rows:
            return []
        try:
            return self._predict(version, rows)
        except BackendUnavailable as exc:
            if not self.fallback_local:
                raise
            logger.warning("TorchServe unavailable (%s); %s served in-process", exc, version)
            from apps.inference.backends import get_backend

            return get_backend("local").predict(version, rows)

    def health(self) -> dict[str, Any]:
        try:
            response = self._client.get(
                f"{self.inference_url}/ping",
                headers=self._auth("inference"),
                timeout=min(self.timeout_s, 2.0),
            )
            body = response.json()
            server = str(body.get("status", "Unknown")) if isinstance(body, dict) else "Unknown"
        except (httpx.HTTPError, ValueError) as exc:
            server = f"Unreachable ({type(exc).__name__})"
        breaker = self._gate.describe()
        if server == "Healthy" and breaker["state"] == pybreaker.STATE_CLOSED:
            status = "ok"
        elif server.startswith(("Unhealthy", "Unreachable")) or breaker["state"] == "open":
            status = "down"
        else:
            status = "degraded"
        with self._lock:
            targets = list(self._loaded.values())
        return {
            "backend": self.name,
            "status": status,
            "torchserve": server,
            "breaker": breaker,
            "settings": {
                "inference_url": self.inference_url,
                "management_url": self.management_url,
                "timeout_s": self.timeout_s,
                "workers": self.workers,
                "batch_size": self.batch_size,
                "max_batch_delay_ms": self.max_batch_delay_ms,
                "fallback_local": self.fallback_local,
            },
            "loaded": [
                {"model": t.name, "version": t.version, "mar_sha256": t.mar_sha256} for t in targets
            ],
        }

    def unload(self, version: ModelVersion) -> None:
        """Unregister ``version`` from TorchServe (a later predict registers it again).

        TorchServe refuses to delete the default version while others exist (403): another
        registered version is made the default first.
        """
        self._forget(version)
        self._unregister(*self._identity(version))

    # --- beyond the protocol -------------------------------------------------------------

    @async_unsafe
    def scale(self, version: ModelVersion, workers: int) -> dict[str, Any]:
        """Run exactly ``workers`` workers for ``version``; returns TorchServe's description."""
        if workers < 1:
            raise ValidationFailed.for_field("workers", "must be at least 1")
        target = self._ensure_loaded(version)
        self._scale(target.name, target.version, workers)
        return self.describe(version)

    @async_unsafe
    def set_default(self, version: ModelVersion) -> None:
        """Make ``version`` what ``/predictions/<slug>`` (without a version) serves."""
        target = self._ensure_loaded(version)
        self._set_default(target.name, target.version)

    def describe(self, version: ModelVersion) -> dict[str, Any]:
        """TorchServe's description of ``version`` (workers, batch size, status)."""
        name, label = self._identity(version)
        described = self._describe(name, label)
        if described is None:
            raise BackendUnavailable(f"TorchServe does not serve {name} v{label}.")
        return described

    def breaker_state(self) -> str:
        return self._gate.state

    def close(self) -> None:
        self._client.close()

    # --- HTTP ----------------------------------------------------------------------------

    def _auth(self, api: Api) -> dict[str, str]:
        token = self._keys.get(api)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _send(
        self,
        method: str,
        url: str,
        *,
        api: Api,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call through the breaker. Transport errors, timeouts and 5xx count as failures
        and raise BackendUnavailable; any other answer is returned (and counts as a success)."""
        timeout = timeout or self.timeout_s
        probe = self._gate.admit()
        try:
            for attempt in range(2):
                try:
                    response = self._client.request(
                        method,
                        url,
                        headers={**(headers or {}), **self._auth(api)},
                        timeout=timeout,
                        **kwargs,
                    )
                except httpx.TimeoutException as exc:
                    self._gate.record_failure(exc)
                    raise BackendUnavailable(
                        f"TorchServe did not answer within {timeout:g} s.",
                        retry_after=self._retry_after(),
                    ) from exc
                except httpx.TransportError as exc:
                    self._gate.record_failure(exc)
                    raise BackendUnavailable(
                        f"TorchServe is unreachable ({type(exc).__name__}).",
                        retry_after=self._retry_after(),
                    ) from exc
                if response.status_code >= 500:
                    failure = RuntimeError(f"{response.status_code} {_message(response)}")
                    self._gate.record_failure(failure)
                    logger.warning("TorchServe %s %s: %s", method, url, failure)
                    raise BackendUnavailable(
                        f"TorchServe answered {response.status_code}.",
                        retry_after=self._retry_after(),
                    )
                self._gate.record_success()
                if _is_invalid_key(response) and attempt == 0 and self._keys.reload():
                    continue  # the keys were rotated: once more with the new ones
                return response
            return response
        finally:
            self._gate.release(probe)

    def _retry_after(self) -> int:
        return max(1, math.ceil(self._gate.remaining_s() or self._gate.reset_timeout))

    def _refused(self, what: str, response: httpx.Response) -> BackendUnavailable:
        """An answer TorchServe should not give (bad token, bad config): not the client's fault."""
        if _is_invalid_key(response):
            logger.error("TorchServe refused the token for %s", what)
            return BackendUnavailable("TorchServe refused Gatehouse's token.")
        logger.error("TorchServe %s: %s %s", what, response.status_code, _message(response))
        return BackendUnavailable(
            f"TorchServe could not {what}: {response.status_code} {_message(response)}"
        )

    # --- predict -------------------------------------------------------------------------

    def _predict(self, version: ModelVersion, rows: list[dict[str, Any]]) -> Probabilities:
        body = json.dumps({"rows": rows}).encode()
        for attempt in range(2):
            target = self._ensure_loaded(version)
            label = target.version
            response = self._send(
                "POST",
                f"{self.inference_url}/predictions/{_q(target.name)}/{_q(label)}",
                api="inference",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            if response.status_code == 200:
                return self._probabilities(version, response, len(rows))
            if response.status_code == 404 and attempt == 0:
                # TorchServe restarted, or another process unloaded it: register it again.
                logger.info("%s v%s is not registered: loading it again", target.name, label)
                self._forget(version)
                continue
            if response.status_code == 400:
                self._raise_invalid_rows(response)
            raise self._refused(f"predict with {target.name} v{target.version}", response)
        raise AssertionError("unreachable")

    @staticmethod
    def _raise_invalid_rows(response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            return
        if not isinstance(body, dict) or body.get("code") != "invalid_rows":
            return
        errors = []
        for problem in body.get("errors") or []:
            row, field = problem.get("row"), problem.get("field")
            errors.append(
                {
                    "field": f"rows.{row}" + (f".{field}" if field else ""),
                    "message": str(problem.get("message", "invalid")),
                    "type": "invalid",
                }
            )
        fields = ", ".join(e["field"] for e in errors[:5])
        raise ValidationFailed(f"Invalid rows: {fields}.", errors=errors[:MAX_FIELD_ERRORS])

    @staticmethod
    def _probabilities(version: ModelVersion, response: httpx.Response, n: int) -> Probabilities:
        n_labels = len(version.signature["output"]["labels"])
        try:
            values = response.json()["probabilities"]
            probabilities = [[float(p) for p in row] for row in values]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable("TorchServe answered a malformed body.") from exc
        if len(probabilities) != n or any(len(p) != n_labels for p in probabilities):
            raise BackendUnavailable(
                f"TorchServe answered {len(probabilities)} rows for {n} (expected {n_labels} "
                "probabilities each)."
            )
        return probabilities

    # --- loading -------------------------------------------------------------------------

    def _identity(self, version: ModelVersion) -> tuple[str, str]:
        from apps.registry.packaging import torchserve_model_name

        return torchserve_model_name(version.family.slug), version.version

    def _forget(self, version: ModelVersion) -> None:
        with self._lock:
            for key in [k for k in self._loaded if k[0] == version.pk]:
                del self._loaded[key]

    def _ensure_loaded(self, version: ModelVersion) -> _Target:
        key = (version.pk, version.artifact_sha256)
        target = self._loaded.get(key)
        if target is not None:
            return target
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            target = self._loaded.get(key)
            if target is None:
                target = self._load(version)
                with self._lock:
                    self._loaded[key] = target
            return target

    def _load(self, version: ModelVersion) -> _Target:
        from apps.registry.packaging import mar_file_name

        if not version.mar_sha256:
            from apps.registry.services import version_package

            started = time.monotonic()
            version.mar_sha256 = version_package(version_id=version.pk).mar_sha256
            logger.info("packaged %s in %.2f s", version, time.monotonic() - started)
        name, label = self._identity(version)
        file_name = mar_file_name(name, label)
        replaced = self._install_mar(version, file_name)
        self._register(name, label, file_name, replaced=replaced)
        logger.info("loaded %s v%s into TorchServe (mar %s)", name, label, version.mar_sha256[:12])
        return _Target(name, label, version.mar_sha256, time.time())

    def _install_mar(self, version: ModelVersion, file_name: str) -> bool:
        """Put the verified archive in the model store (atomically); True if the file changed."""
        target = self.model_store / file_name
        if target.is_file() and _sha256_file(target) == version.mar_sha256:
            return False
        data = self._verified_mar(version)
        self.model_store.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.model_store, prefix=".incoming-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.chmod(tmp_name, 0o644)  # TorchServe may run as another user of the group
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return True

    def _verified_mar(self, version: ModelVersion) -> bytes:
        """The archive's bytes, checked against ``mar_sha256`` and against the version it
        claims to hold (its manifest names the weights' SHA-256)."""
        from apps.registry.artifacts import (
            ArtifactMissing,
            ArtifactTampered,
            default_store,
        )
        from gatehouse.services import alert_raise

        try:
            data = default_store().read_verified(version.mar_sha256)
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                spec = json.loads(archive.read(MANIFEST_NAME))
            if spec.get("weights_sha256") != version.artifact_sha256 or str(
                spec.get("version")
            ) != str(version.version):
                raise ArtifactTampered("The TorchServe archive does not hold this version.")
        except (ArtifactTampered, ArtifactMissing, zipfile.BadZipFile, KeyError, ValueError) as exc:
            alert_raise(
                kind="artifact_integrity",
                severity="critical",
                title=f"TorchServe archive of {version} refused: {type(exc).__name__}",
                detail=f"expected mar sha256 {version.mar_sha256}",
                subject=str(version),
                family=version.family.slug,
            )
            if isinstance(exc, (ArtifactTampered, ArtifactMissing)):
                raise
            raise ArtifactTampered("The TorchServe archive is unreadable.") from exc
        return data

    def _register(self, name: str, label: str, file_name: str, *, replaced: bool) -> None:
        params = {
            "url": file_name,
            "model_name": name,
            "initial_workers": self.workers,
            "batch_size": self.batch_size,
            "max_batch_delay": self.max_batch_delay_ms,
            "synchronous": "true",
        }
        for attempt in range(2):
            try:
                response = self._send(
                    "POST",
                    f"{self.management_url}/models",
                    api="management",
                    params=params,
                    timeout=self.management_timeout_s,
                )
            except BackendUnavailable as exc:
                if not isinstance(exc.__cause__, httpx.ConnectError):
                    # It may have reached TorchServe: never leave it half-registered (trap 5).
                    self._delete_quietly(name, label)
                raise
            if response.status_code == 409 and replaced and attempt == 0:
                # Registered from an older file of this version: serve the verified one.
                logger.warning("%s v%s: replacing the registered archive", name, label)
                self._unregister(name, label)
                continue
            if response.status_code not in (200, 409):
                self._delete_quietly(name, label)
                raise self._refused(f"register {file_name}", response)
            break
        described = self._describe(name, label)
        if self._ready(described) == 0:
            # Registered earlier by a registration that failed half-way (trap 5), or its
            # workers died: start them, else unregister it so that nothing serves a 503.
            try:
                self._scale(name, label, self.workers)
                described = self._describe(name, label)
            except BackendUnavailable:
                described = None
            if self._ready(described) == 0:
                self._delete_quietly(name, label)
                raise BackendUnavailable(f"TorchServe has no READY worker for {name} v{label}.")

    @staticmethod
    def _ready(described: dict[str, Any] | None) -> int:
        workers = (described or {}).get("workers") or []
        return sum(1 for w in workers if w.get("status") == "READY")

    def _describe(self, name: str, label: str) -> dict[str, Any] | None:
        response = self._send(
            "GET", f"{self.management_url}/models/{_q(name)}/{_q(label)}", api="management"
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused(f"describe {name} v{label}", response)
        described = response.json()
        return described[0] if isinstance(described, list) and described else None

    def _scale(self, name: str, label: str, workers: int) -> None:
        response = self._send(
            "PUT",
            f"{self.management_url}/models/{_q(name)}/{_q(label)}",
            api="management",
            params={"min_worker": workers, "max_worker": workers, "synchronous": "true"},
            timeout=self.management_timeout_s,
        )
        if response.status_code != 200:
            raise self._refused(f"scale {name} v{label} to {workers} workers", response)

    def _set_default(self, name: str, label: str) -> None:
        response = self._send(
            "PUT",
            f"{self.management_url}/models/{_q(name)}/{_q(label)}/set-default",
            api="management",
        )
        if response.status_code != 200:
            raise self._refused(f"make {name} v{label} the default", response)

    def _delete(self, name: str, label: str) -> httpx.Response:
        return self._send(
            "DELETE",
            f"{self.management_url}/models/{_q(name)}/{_q(label)}",
            api="management",
            timeout=self.management_timeout_s,
        )

    def _unregister(self, name: str, label: str) -> None:
        response = self._delete(name, label)
        if response.status_code == 403:
            # Trap 6: the default version cannot go while others exist.
            other = self._another_version(name, label)
            if other is None:
                raise Conflict(
                    f"TorchServe refuses to unregister {name} v{label}: {_message(response)}",
                    code="torchserve_default_version",
                )
            logger.info("%s v%s is the default: v%s becomes the default first", name, label, other)
            self._set_default(name, other)
            response = self._delete(name, label)
        if response.status_code not in (200, 404):
            raise self._refused(f"unregister {name} v{label}", response)
        logger.info("unregistered %s v%s from TorchServe", name, label)

    def _delete_quietly(self, name: str, label: str) -> None:
        try:
            response = self._delete(name, label)
        except BackendUnavailable as exc:
            logger.warning("could not unregister %s v%s after a failure: %s", name, label, exc)
            return
        if response.status_code not in (200, 404):
            logger.warning(
                "could not unregister %s v%s after a failure: %s %s",
                name,
                label,
                response.status_code,
                _message(response),
            )

    def _another_version(self, name: str, label: str) -> str | None:
        url = f"{self.management_url}/models/{_q(name)}/all"
        response = self._send("GET", url, api="management")
        if response.status_code != 200:
            return None
        versions = [str(d.get("modelVersion")) for d in response.json() if isinstance(d, dict)]
        others = sorted((v for v in versions if v != label), reverse=True)
        return others[0] if others else None
