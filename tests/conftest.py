"""Shared fixtures: users per role, verified sessions, API keys, model families."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.registry import services as registry_services
from apps.registry.permissions import FamilyAction
from apps.registry.schemas import FamilyIn
from gatehouse import services
from gatehouse.roles import Role
from tests.factories import ModelFamilyFactory, UserFactory

IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(autouse=True)
def _in_memory_channel_layer(settings: Any, request: pytest.FixtureRequest) -> None:
    """In-process tests use the in-memory layer; `real_layer` tests keep the configured one."""
    if "real_layer" not in request.keywords:
        settings.CHANNEL_LAYERS = IN_MEMORY_LAYER


@pytest.fixture(autouse=True)
def _witness_files_of_the_test(settings: Any, tmp_path: Any) -> None:
    """Checkpoints integrated by a test are exported under its own directory, never into the
    checkout's var/log-checkpoints (the witness files of the `make run` log)."""
    settings.LOG_WITNESS_DIR = str(tmp_path / "witness")


@pytest.fixture(autouse=True)
def _no_metrics_flusher(settings: Any) -> None:
    """In-process tests flush monitoring counters themselves (a background thread would use a
    database connection the test does not own); servers started as subprocesses keep it."""
    settings.METRICS_FLUSH_S = 0


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    def make(*roles: Role, **kwargs: Any) -> Any:
        return UserFactory(roles=list(roles), **kwargs)

    return make


@pytest.fixture
def totp_device() -> Callable[[Any], TOTPDevice]:
    def make(user: Any) -> TOTPDevice:
        return TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)

    return make


def totp_code(device: TOTPDevice, *, offset_steps: int = 0) -> str:
    """The current TOTP code of ``device`` (or the one ``offset_steps`` steps away)."""
    from django_otp.oath import TOTP

    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = totp.time + offset_steps * device.step  # type: ignore[attr-defined]
    return f"{totp.token():0{device.digits}d}"


@pytest.fixture
def verified_client(totp_device: Callable[[Any], TOTPDevice]) -> Callable[[Any], Client]:
    """A client logged in as ``user`` whose session passed the second factor."""

    def make(user: Any) -> Client:
        from django_otp import DEVICE_ID_SESSION_KEY

        device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or totp_device(user)
        client = Client()
        client.force_login(user)
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
        return client

    return make


@pytest.fixture
def family(make_user: Callable[..., Any]) -> Any:
    owner = make_user(Role.MODEL_OWNER, username="owner")
    return registry_services.family_create(
        data=FamilyIn(
            slug="credit-risk",
            name="Credit risk",
            purposes=["credit scoring"],
            legal_basis="consent",
            consent_purpose="credit_scoring",
            risk_class="high",
            retention_days=365,
        ),
        owner=owner,
    )


@pytest.fixture
def other_family(make_user: Callable[..., Any]) -> Any:
    return ModelFamilyFactory(slug="digits")


@pytest.fixture
def api_key(make_user: Callable[..., Any], family: Any) -> Callable[..., tuple[Any, str]]:
    """(user, raw key) for an API consumer granted view+predict on ``family``."""

    def make(
        actions: tuple[str, ...] = ("view", "predict"),
        families: tuple[str, ...] = (),
        user: Any = None,
        **kwargs: Any,
    ) -> tuple[Any, str]:
        user = user or make_user(Role.API_CONSUMER)
        registry_services.family_grant(
            family=family, to=user, actions=[FamilyAction.VIEW, FamilyAction.PREDICT]
        )
        created = services.apikey_create(
            user=user, name="test", actions=actions, families=families, **kwargs
        )
        return user, created.raw

    return make


def bearer(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def owner(family: Any) -> Any:
    return family.owner


@pytest.fixture
def owner_client(owner: Any) -> Client:
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def approver(make_user: Callable[..., Any], family: Any) -> Any:
    """An approver of ``family`` (view + approve)."""
    user = make_user(Role.APPROVER, username="approver")
    registry_services.family_grant(
        family=family, to=user, actions=[FamilyAction.VIEW, FamilyAction.APPROVE]
    )
    return user


@pytest.fixture
def isolated_serving(settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A test's own artifact store, no packaging task, and fresh inference backends."""
    from apps.inference.backends import reset_backends

    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
    reset_backends()
    yield
    reset_backends()


@pytest.fixture
def v1(family: Any, approver: Any) -> Any:
    """Version 1.0.0 of the small test model, approved and in production."""
    from tests.registry_models import serve

    return serve(family, family.owner, approver, "1.0.0")


@pytest.fixture
def without_consent_check() -> Any:
    """Tests of the inference mechanics (routing, batching, backends) predict for arbitrary
    subjects: they run without the compliance app's consent check, which has its own tests."""
    from apps.compliance.services import consent_check
    from apps.inference import policy

    policy.unregister_check(consent_check)
    yield
    policy.register_check(consent_check)


@pytest.fixture
def grant_consent() -> Callable[..., None]:
    """Record consent to ``purpose`` for each reference (as the demo's compliance officer)."""
    from apps.compliance.models import Consent, DataSubject, SubjectReference
    from gatehouse.pseudonyms import pseudonymise

    def grant(*references: str, purpose: str = "credit_scoring") -> None:
        subjects = DataSubject.objects.bulk_create(
            [DataSubject(pseudonym=pseudonymise(r)) for r in references]
        )
        SubjectReference.objects.bulk_create(
            [
                SubjectReference(subject=s, reference=r)
                for s, r in zip(subjects, references, strict=True)
            ]
        )
        Consent.objects.bulk_create(
            [
                Consent(subject=s, purpose=purpose, granted=True, notice_version="t", source="api")
                for s in subjects
            ]
        )

    return grant
