"""API fuzzing: schemathesis against Gatehouse's own OpenAPI schema, in process (issue 7, item 2).

Every operation of the NinjaAPI is called through the WSGI application with a real API key
(all four actions) of a user who owns a served model family and is an API consumer, against a
database holding a production version, decisions, a consent, a review and a batch job. Three
rounds per operation, each a fixed number of derandomised Hypothesis examples:

* positive data on the real objects (path parameters fixed to them);
* negative data (schema-violating bodies, queries, paths) on the real objects;
* positive data with generated path parameters (unknown objects must be a documented 404).

Each response goes through schemathesis' checks: no 5xx, documented status code and content
type, body valid against the response schema, valid data accepted (no 4xx beyond auth, 404,
409 and 429) and invalid data rejected (never a 2xx). A failing case is recorded, not shrunk,
so one run reports every failure; the figures are printed (``pytest -s`` shows them) and the
test fails on any failure.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from apps.registry import services as registry_services
from apps.registry.permissions import FamilyAction
from gatehouse import services
from gatehouse.api import contains_nul
from gatehouse.roles import Role
from tests.registry_models import Registration, register, serve

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(900)]

POSITIVE_EXAMPLES = 15
NEGATIVE_EXAMPLES = 10
GENERATED_PATH_EXAMPLES = 5
ROW = {"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}

# Operations that change the object they name get objects of their own, so that fuzzing them
# cannot revoke the fuzzing key or retire the version every prediction runs on.
SACRIFICIAL = {
    ("POST", "/api/v1/keys/{key_id}/revoke"): "spare_key",
    ("POST", "/api/v1/registry/families/{slug}/versions/{version}/validate"): "spare_version",
    ("POST", "/api/v1/registry/families/{slug}/versions/{version}/approve"): "spare_version",
    ("POST", "/api/v1/registry/families/{slug}/versions/{version}/reject"): "spare_version",
    ("POST", "/api/v1/registry/families/{slug}/versions/{version}/deploy"): "spare_version",
    ("POST", "/api/v1/registry/families/{slug}/versions/{version}/retire"): "spare_version",
}
# Schema-valid data these operations may still refuse with a 422, for a rule that the schema
# cannot state. Counted and printed, not failures; every other 4xx to valid data is one.
SEMANTIC_422 = {
    # A family that needs consent needs a subject; the subject's consent decides.
    "POST /api/v1/models/{family}/predict": "subject required by the family's consent purpose",
    # Only purposes some model requires consent for are recordable.
    "POST /api/v1/consents": "purpose must be one a model requires consent for",
    # Multipart: the file must be a UTF-8 CSV / the metadata JSON; schemathesis' multipart
    # encoding through the WSGI transport also drops required parts of generated bodies.
    "POST /api/v1/models/{family}/batch": "file must be a UTF-8 CSV",
    "POST /api/v1/registry/families/{slug}/versions": "metadata must be JSON of VersionMetadata",
    # The outcome label must be one of the family's classes.
    "POST /api/v1/decisions/{decision_id}/outcome": "label must be one of the model's classes",
    # Canary and shadow must name approved versions of the family.
    "PUT /api/v1/models/{family}/routing": "canary/shadow must be approved versions",
    # A receipt against an earlier tree needs a kept checkpoint of that size holding the leaf.
    "GET /api/v1/decisions/{decision_id}/receipt": "tree_size must be a kept checkpoint's",
    # A consistency proof reaches at most the log's current size.
    "GET /api/v1/log/consistency": "second must not exceed the log's size",
}
# Run last, in this order: they change state that other operations read.
LAST = [
    "PUT /api/v1/models/{family}/routing",
    "POST /api/v1/keys/{key_id}/revoke",
]


@dataclass
class Tally:
    operations: set[str] = field(default_factory=set)
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)
    failure_kinds: Counter[str] = field(default_factory=Counter)
    semantic_422: int = 0

    def fail(self, label: str, what: str, kind: str) -> None:
        self.failures.setdefault(label, []).append(what)
        self.failure_kinds[kind] += 1


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path, monkeypatch):
    from apps.inference.backends import reset_backends

    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"
    # No metrics flusher thread: its own connection would wait on the test transaction's lock.
    settings.METRICS_FLUSH_S = 0
    # Every operation is fuzzed with one key: the per-key limit would answer 429s halfway.
    settings.RATE_LIMIT_API = "100000/60"
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", lambda _id: None)
    monkeypatch.setattr("apps.compliance.tasks.execute_erasure.delay", lambda _pk: None)
    reset_backends()
    yield
    reset_backends()


@pytest.fixture
def _connection_kept_open(world: dict[str, Any]):
    """The WSGI handler closes the database connection at the end of each request; the test
    database lives in this connection's transaction, so keep it open as Django's test client
    does (after ``world``, whose test client reconnects the handler after each request)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(family, approver, make_user, grant_consent, client) -> dict[str, Any]:
    """A served family with decisions, a consent, a review and a batch job, and the key."""
    v1 = serve(family, family.owner, approver, "1.0.0")
    spare = register(family, family.owner, Registration(version="2.0.0"))
    user = make_user(Role.MODEL_OWNER, Role.API_CONSUMER, username="fuzzer")
    registry_services.family_grant(
        family=family,
        to=user,
        actions=[FamilyAction.VIEW, FamilyAction.PREDICT, FamilyAction.MANAGE],
    )
    raw = services.apikey_create(
        user=user, name="fuzz", actions=["view", "predict", "manage", "subjects"]
    ).raw
    spare_key = services.apikey_create(user=user, name="spare", actions=["view"])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    grant_consent("applicant-1", "applicant-2")

    def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
        response = client.post(url, json.dumps(body), content_type="application/json", **headers)
        assert response.status_code in (200, 201, 202), (url, response.content)
        return dict(response.json())

    predicted = post(
        "/api/v1/models/credit-risk/predict", {"rows": [ROW, ROW], "subject": "applicant-1"}
    )
    decision_id = predicted["predictions"][0]["decision_id"]
    post("/api/v1/models/credit-risk/predict", {"rows": [ROW], "subject": "applicant-2"})
    post(
        "/api/v1/consents",
        {
            "subject": "applicant-3",
            "purpose": "credit_scoring",
            "granted": True,
            "notice_version": "2026-01",
            "source": "web",
        },
    )
    review = post(f"/api/v1/decisions/{decision_id}/review", {"reason": "I contest this."})
    upload = io.BytesIO(b"applicant,income,age,housing,sex\napplicant-1,40,35,rent,female\n")
    upload.name = "cases.csv"
    job = client.post(
        "/api/v1/models/credit-risk/batch",
        {"file": upload, "subject_column": "applicant", "purpose": "credit_scoring"},
        **headers,
    )
    assert job.status_code == 202, job.content
    return {
        "auth": {"Authorization": f"Bearer {raw}"},
        "path": {
            "slug": family.slug,
            "family": family.slug,
            "version": v1.version,
            "decision_id": decision_id,
            "job_id": job.json()["id"],
            "reference": "applicant-1",
            "review_id": review["id"],
            "key_id": str(spare_key.key.pk),
        },
        "spare_version": {"version": spare.version},
        "spare_key": {"key_id": str(spare_key.key.pk)},
    }


def _ordered(operations: list[Any]) -> list[Any]:
    return sorted(operations, key=lambda op: LAST.index(op.label) if op.label in LAST else -1)


def _run(op: Any, mode: GenerationMode, examples: int, path: dict[str, Any] | None, **kw: Any):
    tally: Tally = kw["tally"]
    auth: dict[str, str] = kw["auth"]
    round_name: str = kw["round_name"]
    checks = [
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        positive_data_acceptance if mode.is_positive else negative_data_rejection,
    ]
    try:
        strategy = op.as_strategy(generation_mode=mode, path_parameters=path)
    except Exception as exc:  # an operation schemathesis cannot build cases for
        tally.fail(op.label, f"{round_name}: no strategy: {exc}", "strategy")
        return

    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        tally.cases[round_name] += 1
        response = case.call(headers=auth)
        tally.statuses[response.status_code] += 1
        if response.status_code >= 500:
            tally.fail(
                op.label, f"{round_name}: {response.status_code} {case.as_curl_command()}", "5xx"
            )
            return
        try:
            case.validate_response(response, checks=checks, headers=auth)
        except FailureGroup as group:
            for failure in group.exceptions:
                if (
                    type(failure).__name__ == "RejectedPositiveData"
                    and response.status_code == 422
                    and (op.label in SEMANTIC_422 or contains_nul(case.body))
                ):  # U+0000 in a body is refused: PostgreSQL cannot store it (gatehouse/api.py)
                    tally.semantic_422 += 1
                    continue
                title = getattr(failure, "title", type(failure).__name__)
                tally.fail(
                    op.label,
                    f"{round_name}: {title}: {response.status_code} "
                    f"{response.text[:200]} <- {case.as_curl_command(headers=auth)[:400]}",
                    type(failure).__name__,
                )

    # Unsatisfiable: e.g. no negative data for an operation whose only input is a fixed path.
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()
    tally.operations.add(op.label)


@pytest.mark.usefixtures("_connection_kept_open")
def test_every_operation_survives_fuzzing_with_no_failure(world: dict[str, Any]) -> None:
    from gatehouse.api import api
    from gatehouse.wsgi import application

    schema = schemathesis.openapi.from_dict(api.get_openapi_schema())
    schema.app = application
    operations = _ordered([result.ok() for result in schema.get_all_operations()])
    tally = Tally()
    for op in operations:
        params = {p.name for p in op.path_parameters}
        fixed = {name: world["path"][name] for name in params if name in world["path"]}
        spare = SACRIFICIAL.get((op.method.upper(), op.path))
        if spare:
            fixed.update(world[spare])
        common = {"tally": tally, "auth": world["auth"]}
        _run(
            op,
            GenerationMode.POSITIVE,
            POSITIVE_EXAMPLES,
            fixed or None,
            **common,
            round_name="positive",
        )
        _run(
            op,
            GenerationMode.NEGATIVE,
            NEGATIVE_EXAMPLES,
            fixed or None,
            **common,
            round_name="negative",
        )
        if params:
            _run(
                op,
                GenerationMode.POSITIVE,
                GENERATED_PATH_EXAMPLES,
                None,
                **common,
                round_name="generated-paths",
            )

    total = len(operations)
    failures = sum(len(v) for v in tally.failures.values())
    other = {"5xx", "AcceptedNegativeData", "RejectedPositiveData"}
    conformance = sum(n for k, n in tally.failure_kinds.items() if k not in other)
    print(
        f"\nschemathesis: operations covered {len(tally.operations)}/{total}, "
        f"cases generated {sum(tally.cases.values())} ({dict(tally.cases)}), "
        f"server errors {tally.failure_kinds['5xx']}, "
        f"schema-conformance failures {conformance}, "
        f"accepted invalid payloads {tally.failure_kinds['AcceptedNegativeData']}, "
        f"rejected valid payloads {tally.failure_kinds['RejectedPositiveData']}, "
        f"valid payloads refused by a documented semantic rule {tally.semantic_422}, "
        f"statuses {dict(sorted(tally.statuses.items()))}"
    )
    for label, items in tally.failures.items():
        print(f"  {label}: {len(items)} failure(s)")
        for item in sorted(set(items))[:5]:
            print(f"    {item}")
    assert len(tally.operations) == total
    assert not failures, f"{failures} failure(s) in {len(tally.failures)} operation(s)"
