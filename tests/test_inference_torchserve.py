"""The TorchServe backend against a real TorchServe: loading (package, copy, register),
predictions equal to the in-process backend, scaling, versions, unloading, the circuit
breaker on a dead and on a hung server, token keys, the dev command, and the API end to end."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import stat
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from django.core.management import CommandError, call_command

from apps.inference import torchserve_server
from apps.inference.backends import Backend, BackendUnavailable, get_backend, reset_backends
from apps.inference.backends.local import LocalBackend
from apps.inference.backends.torchserve import TorchServeBackend
from apps.inference.models import Decision
from apps.registry import services as registry_services
from apps.registry.artifacts import default_store
from apps.registry.permissions import FamilyAction
from gatehouse.errors import ValidationFailed
from gatehouse.roles import Role
from tests.registry_models import Registration, build_model, register, state_dict_bytes
from tests.test_inference_backends import rows, run_threads
from tests.torchserve import TorchServeInstance, torchserve

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db,
    pytest.mark.usefixtures("without_consent_check"),
]

MODEL = "credit-risk"
URL = f"/api/v1/models/{MODEL}/predict"
# .mar of each version label built by the first test that packaged it: later tests reuse it,
# so that TorchServe keeps the registration instead of replacing a changed archive each time.
MARS: dict[str, str] = {}


# --- Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timings(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Figures worth reading, written to the terminal at the end (not swallowed by capture)."""
    figures: dict[str, str] = {}
    yield figures
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not figures:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for name, value in figures.items():
            reporter.write_line(f"[torchserve backend] {name}: {value}")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, timings: dict[str, str]
) -> Iterator[TorchServeInstance]:
    store = tmp_path_factory.mktemp("model_store")
    started = time.perf_counter()
    with torchserve(tmp_path_factory.mktemp("torchserve"), store) as ts:
        timings["start -> healthy"] = f"{time.perf_counter() - started:.2f} s"
        yield ts


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(autouse=True)
def _configured(
    settings: Any, server: TorchServeInstance, artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    settings.ARTIFACT_STORE_DIR = artifacts
    settings.TORCHSERVE_INFERENCE_URL = server.inference_url
    settings.TORCHSERVE_MANAGEMENT_URL = server.management_url
    settings.TORCHSERVE_MODEL_STORE = server.model_store
    settings.TORCHSERVE_TOKEN = ""
    settings.TORCHSERVE_KEY_FILE = ""
    settings.TORCHSERVE_TIMEOUT_S = 5
    settings.TORCHSERVE_BREAKER_FAIL_MAX = 3
    settings.TORCHSERVE_BREAKER_RESET_S = 1
    settings.TORCHSERVE_FALLBACK_LOCAL = False
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
    reset_backends()
    yield
    reset_backends()


@pytest.fixture
def approver(make_user: Callable[..., Any], family: Any) -> Any:
    user = make_user(Role.APPROVER, username="approver")
    registry_services.family_grant(family=family, to=user, actions=[FamilyAction.APPROVE])
    return user


@pytest.fixture
def serve(family: Any, approver: Any) -> Callable[..., Any]:
    """Register, validate and approve a version (and deploy it to ``target``)."""

    def make(
        number: str = "1.0.0",
        *,
        target: str = "production",
        artifact: bytes | None = None,
        reuse_mar: bool = True,
    ) -> Any:
        files = {"artifact": artifact} if artifact else {}
        version = register(family, family.owner, Registration(version=number), **files)
        registry_services.version_validate(version=version, user=family.owner)
        registry_services.version_approve(version=version, user=approver, reason="serve it")
        if target:
            registry_services.version_deploy(version=version, user=family.owner, target=target)
        version.refresh_from_db()
        if reuse_mar and number in MARS:
            version.mar_sha256 = MARS[number]
            version.save(update_fields=["mar_sha256"])
        return version

    return make


def remember(version: Any) -> None:
    version.refresh_from_db()
    assert version.mar_sha256
    MARS[version.version] = version.mar_sha256


@pytest.fixture
def make_backend() -> Iterator[Callable[..., TorchServeBackend]]:
    made: list[TorchServeBackend] = []

    def make(**kwargs: Any) -> TorchServeBackend:
        backend = TorchServeBackend(**kwargs)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def local() -> Iterator[LocalBackend]:
    backend = LocalBackend()
    yield backend
    backend.close()


def assert_same(got: list[list[float]], expected: list[list[float]]) -> None:
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=1e-5, rtol=0)


def other_weights() -> bytes:
    model = build_model()
    with torch.no_grad():
        model.linear.bias[1] = 2.0  # a little less risk than version 1's 2.5
    return state_dict_bytes(model)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Listener:
    """A loopback TCP listener served by a thread; ``handle`` gets each accepted socket."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.sockets.append(conn)
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        """Hold the connection and never answer."""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        for s in self.sockets:
            with suppress(OSError):
                s.close()

    def __enter__(self) -> _Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Forwarder(_Listener):
    """Relays ``port`` to ``upstream``: TorchServe "back" at the address the backend knows."""

    def __init__(self, port: int, upstream: str) -> None:
        self.upstream = int(upstream.rsplit(":", 1)[1])
        super().__init__(port)

    def handle(self, conn: socket.socket) -> None:
        up = socket.create_connection(("127.0.0.1", self.upstream))
        self.sockets.append(up)
        for src, dst in ((conn, up), (up, conn)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def count_requests(backend: TorchServeBackend) -> list[str]:
    """URLs the backend's HTTP client is asked for from now on."""
    calls: list[str] = []
    real = backend._client.request

    def counting(method: str, url: str, **kwargs: Any) -> httpx.Response:
        calls.append(url)
        return real(method, url, **kwargs)

    backend._client.request = counting  # type: ignore[method-assign]
    return calls


# --- Loading and predicting ---------------------------------------------------------------------


def test_a_version_is_packaged_copied_registered_and_serves_the_local_probabilities(
    serve: Any,
    make_backend: Any,
    local: LocalBackend,
    server: TorchServeInstance,
    timings: dict[str, str],
) -> None:
    v1 = serve(reuse_mar=False)
    assert v1.mar_sha256 == ""
    backend = make_backend()
    assert isinstance(backend, Backend)

    started = time.perf_counter()
    backend.load(v1)
    timings["load (package + copy + register, 1 worker)"] = f"{time.perf_counter() - started:.2f} s"
    remember(v1)
    mar = server.model_store / f"{MODEL}.1.0.0.mar"
    assert sha256_of(mar) == v1.mar_sha256
    assert not [p for p in server.model_store.iterdir() if p.name.startswith(".incoming")]
    workers = server.describe(MODEL, "1.0.0")["workers"]
    assert [w["status"] for w in workers] == ["READY"]

    data = rows(25, seed=3)
    started = time.perf_counter()
    got = backend.predict(v1, data)
    timings["first predict, 25 rows"] = f"{1000 * (time.perf_counter() - started):.1f} ms"
    assert_same(got, local.predict(v1, data))
    started = time.perf_counter()
    backend.predict(v1, data[:1])
    timings["next predict, 1 row"] = f"{1000 * (time.perf_counter() - started):.1f} ms"
    assert backend.predict(v1, []) == []

    health = backend.health()
    assert (health["status"], health["torchserve"]) == ("ok", "Healthy")
    assert health["breaker"]["state"] == "closed"
    assert health["loaded"] == [{"model": MODEL, "version": "1.0.0", "mar_sha256": v1.mar_sha256}]


def test_loading_again_in_a_new_process_finds_it_registered(
    serve: Any, make_backend: Any, local: LocalBackend, server: TorchServeInstance
) -> None:
    v1 = serve()
    first, second = make_backend(), make_backend()  # two processes, as far as TorchServe knows
    first.load(v1)
    second.load(v1)  # 409 "already registered" is fine
    data = rows(4, seed=9)
    assert_same(second.predict(v1, data), local.predict(v1, data))
    assert len(server.describe(MODEL, "1.0.0")["workers"]) == 1


def test_sixteen_concurrent_predictions_are_all_correct(
    serve: Any, make_backend: Any, local: LocalBackend, timings: dict[str, str]
) -> None:
    v1 = serve()
    backend = make_backend()
    backend.load(v1)
    batches = [rows(1 + i % 4, seed=100 + i) for i in range(16)]
    started = time.perf_counter()
    results = run_threads(16, lambda i: backend.predict(v1, batches[i]))
    timings["16 concurrent predicts"] = f"{1000 * (time.perf_counter() - started):.0f} ms"
    for data, got in zip(batches, results, strict=True):
        assert not isinstance(got, Exception), got
        assert_same(got, local.predict(v1, data))


def test_invalid_rows_fail_with_the_fields_named_and_do_not_count_as_failures(
    serve: Any, make_backend: Any
) -> None:
    v1 = serve()
    backend = make_backend()
    good = rows(1, seed=5)[0]
    bad = {**good, "age": 17, "housing": "castle", "extra": 1}
    with pytest.raises(ValidationFailed) as excinfo:
        backend.predict(v1, [good, bad])
    assert excinfo.value.status_code == 422
    assert {e["field"] for e in excinfo.value.errors} == {
        "rows.1.age",
        "rows.1.housing",
        "rows.1.extra",
    }
    breaker = backend.health()["breaker"]
    assert (breaker["state"], breaker["fail_counter"]) == ("closed", 0)


def test_a_version_is_scaled_to_two_workers_and_back(
    serve: Any, make_backend: Any, local: LocalBackend, timings: dict[str, str]
) -> None:
    v1 = serve()
    backend = make_backend()
    started = time.perf_counter()
    described = backend.scale(v1, 2)
    timings["scale 1 -> 2 workers"] = f"{time.perf_counter() - started:.2f} s"
    assert [w["status"] for w in described["workers"]] == ["READY", "READY"]
    data = rows(3, seed=11)
    assert_same(backend.predict(v1, data), local.predict(v1, data))
    described = backend.scale(v1, 1)
    assert len(described["workers"]) == 1
    with pytest.raises(ValidationFailed):
        backend.scale(v1, 0)


def test_a_second_version_is_served_beside_the_first_and_can_become_the_default(
    serve: Any, make_backend: Any, local: LocalBackend, server: TorchServeInstance
) -> None:
    v1 = serve()
    v2 = serve("2.0.0", target="", artifact=other_weights())
    backend = make_backend()
    data = rows(6, seed=13)
    try:
        got1, got2 = backend.predict(v1, data), backend.predict(v2, data)
        remember(v2)
        assert_same(got1, local.predict(v1, data))
        assert_same(got2, local.predict(v2, data))
        assert not np.allclose(got1, got2), "the two versions should differ"
        assert server.describe(MODEL)["modelVersion"] == "1.0.0"

        backend.set_default(v2)
        assert server.describe(MODEL)["modelVersion"] == "2.0.0"
        unpinned = server.predict(MODEL, data)  # /predictions/<slug> serves the default
        assert_same(unpinned.json()["probabilities"], got2)
    finally:
        backend.set_default(v1)
        backend.unload(v2)


def test_unloading_removes_a_version_even_the_default_one(
    serve: Any, make_backend: Any, local: LocalBackend, server: TorchServeInstance
) -> None:
    v1 = serve()
    v2 = serve("2.0.0", target="", artifact=other_weights())
    backend = make_backend()
    backend.load(v1)
    backend.load(v2)
    remember(v2)
    backend.set_default(v2)

    backend.unload(v2)  # the default, while 1.0.0 exists: 1.0.0 becomes the default first
    gone = server.request("GET", f"{server.management_url}/models/{MODEL}/2.0.0")
    assert gone.status == 404
    assert server.describe(MODEL)["modelVersion"] == "1.0.0"
    assert backend.health()["loaded"] == [
        {"model": MODEL, "version": "1.0.0", "mar_sha256": v1.mar_sha256}
    ]

    data = rows(2, seed=17)  # a later predict registers it again
    assert_same(backend.predict(v2, data), local.predict(v2, data))
    backend.unload(v2)
    backend.unload(v2)  # already gone: nothing to do
    assert server.request("GET", f"{server.management_url}/models/{MODEL}/2.0.0").status == 404


def test_a_version_unloaded_elsewhere_is_registered_again_on_the_next_predict(
    serve: Any, make_backend: Any, local: LocalBackend, server: TorchServeInstance
) -> None:
    v1 = serve()
    v2 = serve("2.0.0", target="", artifact=other_weights())
    this_process, other_process = make_backend(), make_backend()
    data = rows(2, seed=19)
    this_process.predict(v2, data)
    other_process.unload(v2)  # or TorchServe restarted: the version answers 404 now
    assert_same(this_process.predict(v2, data), local.predict(v2, data))
    this_process.unload(v2)
    assert server.describe(MODEL)["modelVersion"] == v1.version


# --- Failures: dead server, hung server, circuit breaker ----------------------------------------


def test_a_dead_server_is_unavailable_at_once_then_the_breaker_opens_and_closes_again(
    serve: Any,
    make_backend: Any,
    local: LocalBackend,
    server: TorchServeInstance,
    settings: Any,
    timings: dict[str, str],
) -> None:
    v1 = serve()
    port = free_port()  # nothing listens there: TorchServe is down
    backend = make_backend(inference_url=f"http://127.0.0.1:{port}")
    backend.load(v1)  # the management API still answers
    data = rows(2, seed=23)
    for _ in range(settings.TORCHSERVE_BREAKER_FAIL_MAX):
        started = time.perf_counter()
        with pytest.raises(BackendUnavailable) as excinfo:
            backend.predict(v1, data)
        assert time.perf_counter() - started < settings.TORCHSERVE_TIMEOUT_S
        assert int(excinfo.value.headers["Retry-After"]) >= 1
    assert backend.breaker_state() == "open"

    calls = count_requests(backend)
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable) as excinfo:
        backend.predict(v1, data)
    elapsed = time.perf_counter() - started
    timings["breaker open: refusal latency"] = f"{1000 * elapsed:.2f} ms"
    assert elapsed < 0.05
    assert calls == []
    assert int(excinfo.value.headers["Retry-After"]) >= 1
    assert backend.health()["status"] == "down"

    with Forwarder(port, server.inference_url):  # the server is back at its address
        time.sleep(settings.TORCHSERVE_BREAKER_RESET_S + 0.05)
        started = time.perf_counter()
        assert_same(backend.predict(v1, data), local.predict(v1, data))  # the probe
        timings["half-open probe after reset_timeout"] = (
            f"{1000 * (time.perf_counter() - started):.1f} ms"
        )
        assert backend.breaker_state() == "closed"
        assert_same(backend.predict(v1, data), local.predict(v1, data))
    assert len([c for c in calls if "/predictions/" in c]) == 2  # the probe, then one more


def test_a_hung_server_times_out_within_the_timeout_then_the_breaker_answers_at_once(
    serve: Any, make_backend: Any, settings: Any, timings: dict[str, str]
) -> None:
    v1 = serve()
    settings.TORCHSERVE_TIMEOUT_S = 1
    settings.TORCHSERVE_BREAKER_FAIL_MAX = 2
    settings.TORCHSERVE_BREAKER_RESET_S = 30
    with _Listener() as hung:  # accepts connections, never answers
        settings.TORCHSERVE_INFERENCE_URL = hung.url
        backend = make_backend()
        backend.load(v1)
        data = rows(1, seed=29)
        for _ in range(2):
            started = time.perf_counter()
            with pytest.raises(BackendUnavailable, match="within 1 s"):
                backend.predict(v1, data)
            elapsed = time.perf_counter() - started
            assert 0.9 < elapsed < 1.5, elapsed
        timings["hung server: BackendUnavailable after"] = f"{elapsed:.2f} s (timeout 1 s)"
        assert backend.breaker_state() == "open"
        started = time.perf_counter()
        with pytest.raises(BackendUnavailable) as excinfo:
            backend.predict(v1, data)
        assert time.perf_counter() - started < 0.05
        assert 1 <= int(excinfo.value.headers["Retry-After"]) <= 30


def test_a_registration_that_fails_is_not_left_half_registered(
    serve: Any, make_backend: Any, server: TorchServeInstance
) -> None:
    serve()
    v3 = serve("3.0.0", target="", reuse_mar=False)
    store = default_store()
    packaged = registry_services.version_package(version_id=v3.pk)
    broken = io.BytesIO()  # an archive whose workers cannot start: TorchServe answers 500
    with (
        zipfile.ZipFile(store.path(packaged.mar_sha256)) as src,
        zipfile.ZipFile(broken, "w") as dst,
    ):
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "architectures.py":
                data = b"raise RuntimeError('this worker cannot start')\n"
            dst.writestr(item, data)
    v3.mar_sha256 = store.put_bytes(broken.getvalue(), max_bytes=10**8).sha256
    v3.save(update_fields=["mar_sha256"])
    backend = make_backend()
    try:
        with pytest.raises(BackendUnavailable):
            backend.load(v3)
        gone = server.request("GET", f"{server.management_url}/models/{MODEL}/3.0.0")
        assert gone.status == 404, "trap 5: the half-registered version must be deleted"
    finally:
        server.unregister(MODEL, "3.0.0")
        (server.model_store / f"{MODEL}.3.0.0.mar").unlink(missing_ok=True)


# --- Tokens and the development command ---------------------------------------------------------


@pytest.mark.parametrize(
    ("debug", "token", "token_auth"),
    [(True, "", False), (True, "secret", True), (False, "", True)],
)
def test_token_authorization_is_off_only_in_development_without_a_token(
    settings: Any, debug: bool, token: str, token_auth: bool
) -> None:
    settings.DEBUG = debug
    settings.TORCHSERVE_TOKEN = token
    config = torchserve_server.ServerConfig.from_settings()
    assert config.token_auth is token_auth
    properties = torchserve_server.render_properties(config)
    assert f"disable_token_authorization={'false' if token_auth else 'true'}" in properties
    assert "enable_model_api=true" in properties
    assert f"allowed_urls=file://{config.model_store}" in properties.replace("\\", "")


def test_the_command_starts_a_token_protected_server_and_stops_it_without_orphans(
    serve: Any,
    make_backend: Any,
    local: LocalBackend,
    server: TorchServeInstance,
    settings: Any,
    tmp_path_factory: pytest.TempPathFactory,
    timings: dict[str, str],
) -> None:
    v1 = serve()
    ports = [free_port() for _ in range(5)]
    settings.DEBUG = False  # token authorization on
    settings.VAR_DIR = tmp_path_factory.mktemp("var")
    settings.TORCHSERVE_INFERENCE_URL = f"http://127.0.0.1:{ports[0]}"
    settings.TORCHSERVE_MANAGEMENT_URL = f"http://127.0.0.1:{ports[1]}"
    settings.TORCHSERVE_METRICS_URL = f"http://127.0.0.1:{ports[2]}"
    settings.TORCHSERVE_GRPC_INFERENCE_PORT = ports[3]
    settings.TORCHSERVE_GRPC_MANAGEMENT_PORT = ports[4]
    config = torchserve_server.ServerConfig.from_settings()
    assert config.token_auth
    out = io.StringIO()
    java = parent = None
    started = time.perf_counter()
    try:
        call_command("torchserve", "start", stdout=out)
        timings["manage.py torchserve start"] = f"{time.perf_counter() - started:.2f} s"
        java = torchserve_server.java_process(config)
        parent = torchserve_server.launcher_process(config)
        assert java is not None
        assert parent is not None
        assert stat.S_IMODE(os.stat(config.key_file).st_mode) == 0o600
        call_command("torchserve", "status", stdout=out)
        assert "/ping: Healthy" in out.getvalue()
        with pytest.raises(CommandError, match="already running"):
            call_command("torchserve", "start", stdout=out)

        data = rows(3, seed=31)
        settings.TORCHSERVE_TOKEN = "wrong"
        refused = make_backend()
        with pytest.raises(BackendUnavailable, match="token"):
            refused.predict(v1, data)
        assert refused.health()["breaker"]["fail_counter"] == 0  # a 4xx is not an outage

        settings.TORCHSERVE_TOKEN = ""
        settings.TORCHSERVE_KEY_FILE = str(config.key_file)
        backend = make_backend()
        assert_same(backend.predict(v1, data), local.predict(v1, data))
        assert backend.health()["torchserve"] == "Healthy"

        old = json.loads(config.key_file.read_text())
        rotated = httpx.post(
            f"{config.management_url}/token",
            params={"type": "inference"},
            headers={"Authorization": f"Bearer {old['API']['key']}"},
            trust_env=False,
        )
        assert rotated.status_code == 200, rotated.text
        new = json.loads(config.key_file.read_text())
        assert new["inference"]["key"] != old["inference"]["key"]
        assert_same(backend.predict(v1, data), local.predict(v1, data))  # re-reads the keys
    finally:
        started = time.perf_counter()
        call_command("torchserve", "stop", stdout=out)
        timings["manage.py torchserve stop"] = f"{time.perf_counter() - started:.2f} s"
    assert java is not None
    assert parent is not None
    assert not java.is_running()
    assert not parent.is_running()
    assert not config.key_file.exists()
    with pytest.raises(CommandError):
        call_command("torchserve", "status", stdout=out)
    assert "TorchServe is not running" in out.getvalue()


# --- Through the API ----------------------------------------------------------------------------


@pytest.fixture
def caller(api_key: Callable[..., tuple[Any, str]]) -> dict[str, str]:
    _, raw = api_key()
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def api_predict(client: Any, headers: dict[str, str], data: list[dict[str, Any]]) -> Any:
    body = {"rows": data, "subject": "applicant-7"}
    return client.post(URL, json.dumps(body), content_type="application/json", **headers)


def test_the_api_serves_through_torchserve_and_records_the_decision(
    client: Any, caller: dict[str, str], serve: Any, local: LocalBackend, settings: Any
) -> None:
    v1 = serve()
    settings.INFERENCE_BACKEND = "torchserve"
    reset_backends()
    data = rows(1, seed=37)
    response = api_predict(client, caller, data)
    assert response.status_code == 200, response.content
    assert get_backend().name == "torchserve"
    (prediction,) = response.json()["predictions"]
    decision = Decision.objects.get(pk=prediction["decision_id"])
    assert decision.artifact_sha256 == v1.artifact_sha256
    (expected,) = local.predict(v1, data)
    labels = decision.version.signature["output"]["labels"]
    assert [decision.scores[x] for x in labels] == pytest.approx(expected, abs=1e-5)


def test_the_api_answers_503_with_retry_after_and_records_nothing_when_torchserve_is_down(
    client: Any, caller: dict[str, str], serve: Any, settings: Any
) -> None:
    serve()
    closed = f"http://127.0.0.1:{free_port()}"
    settings.INFERENCE_BACKEND = "torchserve"
    settings.TORCHSERVE_INFERENCE_URL = settings.TORCHSERVE_MANAGEMENT_URL = closed
    reset_backends()
    before = Decision.objects.count()
    response = api_predict(client, caller, rows(1, seed=41))
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "backend_unavailable"
    assert int(response["Retry-After"]) >= 1
    assert Decision.objects.count() == before


def test_with_the_local_fallback_a_prediction_is_served_while_torchserve_is_down(
    client: Any, caller: dict[str, str], serve: Any, local: LocalBackend, settings: Any
) -> None:
    v1 = serve()
    closed = f"http://127.0.0.1:{free_port()}"
    settings.INFERENCE_BACKEND = "torchserve"
    settings.TORCHSERVE_FALLBACK_LOCAL = True
    settings.TORCHSERVE_INFERENCE_URL = settings.TORCHSERVE_MANAGEMENT_URL = closed
    reset_backends()
    data = rows(1, seed=43)
    response = api_predict(client, caller, data)
    assert response.status_code == 200, response.content
    decision = Decision.objects.get(pk=response.json()["predictions"][0]["decision_id"])
    (expected,) = local.predict(v1, data)
    labels = decision.version.signature["output"]["labels"]
    assert [decision.scores[x] for x in labels] == pytest.approx(expected, abs=1e-5)
