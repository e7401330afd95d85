"""Compliance: consent-gated inference, explanations, human review, subject access, four-eyes
erasure across every store (with a 0-hit scan), lineage flags, bias reports."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from django.apps import apps as django_apps
from django.db import connection
from django.test import Client

from apps.compliance import bias, erasure, explain, services
from apps.compliance.models import (
    BiasReport,
    ConsentRefusal,
    ErasureRequest,
    Explanation,
    Review,
)
from apps.inference.models import Decision, Outcome
from apps.registry import services as registry_services
from apps.registry.models import ModelVersion
from apps.registry.permissions import FamilyAction
from gatehouse.errors import Conflict
from gatehouse.models import Alert
from gatehouse.pseudonyms import pseudonymise
from gatehouse.roles import Role
from tests.decision_log import integrated_and_verified
from tests.registry_models import Registration, register

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_serving")]

URL = "/api/v1/models/credit-risk/predict"
ROW = {"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}


@pytest.fixture(autouse=True)
def _isolated(isolated_serving, settings, monkeypatch):
    # Tasks are run by the tests themselves (a real worker runs them in test_compliance_worker).
    monkeypatch.setattr("apps.compliance.tasks.execute_erasure.delay", lambda _pk: None)


@pytest.fixture
def caller(api_key, v1):
    user, raw = api_key(actions=["view", "predict", "subjects"])
    return user, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def officers(make_user, verified_client):
    first = make_user(Role.COMPLIANCE_OFFICER, username="carla")
    second = make_user(Role.COMPLIANCE_OFFICER, username="dora")
    return (first, verified_client(first)), (second, verified_client(second))


def post(client, url, body, headers=None):
    return client.post(url, json.dumps(body), content_type="application/json", **(headers or {}))


def predict(client, headers, subject="applicant-7", rows=None):
    return post(client, URL, {"rows": rows or [ROW], "subject": subject}, headers)


def consent(client, headers, subject="applicant-7", granted=True, purpose="credit_scoring"):
    return post(
        client,
        "/api/v1/consents",
        {
            "subject": subject,
            "purpose": purpose,
            "granted": granted,
            "notice_version": "2026-01",
            "source": "web",
        },
        headers,
    )


# --- Consent ---------------------------------------------------------------------------------


def test_without_consent_the_prediction_is_refused_and_the_refusal_kept_without_inputs(
    client, caller
):
    response = predict(client, caller[1])
    assert response.status_code == 403
    assert response.json()["code"] == "consent_required"
    assert Decision.objects.count() == 0
    (refusal,) = ConsentRefusal.objects.all()
    assert refusal.reason == "never_given"
    assert refusal.subject_pseudonym == pseudonymise("applicant-7")
    assert not {f.name for f in ConsentRefusal._meta.fields} & {"inputs", "rows", "scores"}


def test_a_grant_allows_and_a_withdrawal_refuses_the_very_next_request(client, caller):
    granted = consent(client, caller[1])
    assert granted.status_code == 201
    served = predict(client, caller[1])
    assert served.status_code == 200
    decision = Decision.objects.get(pk=served.json()["predictions"][0]["decision_id"])
    assert decision.policy_ref == f"consent:{granted.json()['id']}"  # which consent allowed it
    assert consent(client, caller[1], granted=False).status_code == 201
    refused = predict(client, caller[1])
    assert refused.status_code == 403
    assert "withdrawn" in refused.json()["detail"]
    assert Decision.objects.count() == 1
    assert ConsentRefusal.objects.get().reason == "withdrawn"


def test_consent_history_and_current_choice_are_readable(client, caller):
    consent(client, caller[1])
    consent(client, caller[1], granted=False)
    body = client.get("/api/v1/subjects/applicant-7/consents", **caller[1]).json()
    assert body["current"] == {"credit_scoring": False}
    assert [c["granted"] for c in body["history"]] == [False, True]
    assert body["history"][0]["notice_version"] == "2026-01"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"purpose": "marketing"}, 422, "purpose"),
        ({"notice_version": ""}, 422, "notice_version"),
        ({"granted": "maybe"}, 422, "granted"),
        ({"source": "pigeon"}, 422, "source"),
    ],
)
def test_bad_consent_input_is_a_422_naming_the_field(client, caller, body, status, field):
    payload = {
        "subject": "a",
        "purpose": "credit_scoring",
        "granted": True,
        "notice_version": "1",
        **body,
    }
    response = post(client, "/api/v1/consents", payload, caller[1])
    assert response.status_code == status
    assert field in {e["field"] for e in response.json()["errors"]}


def test_unknown_subjects_are_404_and_keys_without_the_subjects_action_403(client, caller, api_key):
    assert client.get("/api/v1/subjects/nobody/consents", **caller[1]).status_code == 404
    _, raw = api_key()
    plain = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert consent(client, plain).status_code == 403
    assert client.get("/api/v1/subjects/applicant-7/consents", **plain).status_code == 403


def test_a_subjects_key_needs_an_owner_who_may_act_for_subjects(client, make_user, family, v1):
    from gatehouse import services as platform_services

    clerk = make_user(Role.BUSINESS_USER)
    raw = platform_services.apikey_create(user=clerk, name="k", actions=["subjects"]).raw
    assert consent(client, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}).status_code == 403


def test_a_subject_known_only_from_a_training_lineage_can_be_erased(officers, v1):
    (_, browser), _ = officers
    created = post(browser, "/api/v1/erasure-requests", {"subject": "subject-2"})
    assert created.status_code == 201
    assert post(browser, "/api/v1/erasure-requests", {"subject": "never-seen"}).status_code == 404


def test_the_consent_page_grants_and_withdraws_in_one_step_each(officers, v1):
    (_, browser), _ = officers
    form = {"reference": "applicant-9", "purpose": "credit_scoring", "notice_version": "n1"}
    assert (
        browser.post("/compliance/subjects/consents/", {**form, "granted": "true"}).status_code
        == 302
    )
    assert services.consent_current(pseudonym=pseudonymise("applicant-9"), purpose="credit_scoring")
    assert (
        browser.post("/compliance/subjects/consents/", {**form, "granted": "false"}).status_code
        == 302
    )
    assert (
        services.consent_current(pseudonym=pseudonymise("applicant-9"), purpose="credit_scoring")
        is False
    )
    page = browser.get("/compliance/subjects/?reference=applicant-9").content.decode()
    assert "credit_scoring: withdrawn" in page


def test_business_users_cannot_open_the_subject_pages(make_user):
    browser = Client()
    browser.force_login(make_user(Role.BUSINESS_USER))
    assert browser.get("/compliance/subjects/?reference=x").status_code == 403


# --- Explanations ----------------------------------------------------------------------------


def _decision(client, caller, subject="applicant-7"):
    consent(client, caller[1], subject=subject)
    response = predict(client, caller[1], subject=subject)
    assert response.status_code == 200, response.content
    return Decision.objects.get(pk=response.json()["predictions"][0]["decision_id"])


def test_a_linear_model_is_explained_exactly_at_decision_time(client, caller):
    decision = _decision(client, caller)
    explanation = Explanation.objects.get(decision=decision)  # stored in the same transaction
    assert explanation.status == "done"
    assert explanation.method == explain.LINEAR
    total = sum(explanation.attributions.values())
    assert total == pytest.approx(explanation.output - explanation.baseline_output, abs=1e-5)
    assert set(explanation.attributions) == {"income", "age", "housing", "sex"}
    assert explanation.attributions["sex"] == explanation.attributions["age"] == 0  # unused
    body = client.get(f"/api/v1/decisions/{decision.id}/explanation", **caller[1]).json()
    assert body["model_version"] == "1.0.0"
    assert body["reasons"][0].endswith("most.")
    # Reproducible from the version and the recorded input.
    (again,) = explain.explain_rows(decision.version, [decision.inputs], [decision.label])
    assert again.attributions == explanation.attributions


def test_integrated_gradients_are_complete_within_tolerance(v1, settings):
    from apps.registry.architectures import MLP

    settings.EXPLANATION_IG_STEPS = 300
    torch.manual_seed(0)
    mlp = MLP(n_inputs=7, hidden=[8], n_classes=2)
    rows = [ROW, {**ROW, "income": 150.0, "housing": "own"}]
    version = ModelVersion(pk=-1, architecture="mlp", signature=v1.signature, artifact_sha256="x")
    explain._models[(-1, "x")] = mlp.eval()
    try:
        results = explain.explain_rows(version, rows, ["bad", "good"])
    finally:
        explain._models.pop((-1, "x"))
    for result in results:
        assert result.method == explain.INTEGRATED_GRADIENTS
        gap = result.output - result.baseline_output
        assert sum(result.attributions.values()) == pytest.approx(gap, abs=2e-3)


def test_explanations_of_other_callers_decisions_are_404(client, caller, api_key):
    decision = _decision(client, caller)
    _, raw = api_key()
    other = client.get(
        f"/api/v1/decisions/{decision.id}/explanation", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    assert other.status_code == 404


def test_the_explanation_page_shows_reasons_and_bars(client, caller, officers):
    decision = _decision(client, caller)
    (_, browser), _ = officers
    page = browser.get(f"/compliance/decisions/{decision.id}/explanation/").content.decode()
    assert "raised the chance" in page or "lowered the chance" in page
    assert '<svg class="attr"' in page


# --- Review ------------------------------------------------------------------------------------


def test_a_contested_decision_is_overridden_and_the_override_is_what_the_subject_sees(
    client, caller, officers
):
    decision = _decision(client, caller)
    response = post(
        client, f"/api/v1/decisions/{decision.id}/review", {"reason": "I disagree"}, caller[1]
    )
    assert response.status_code == 201
    assert response.json()["trigger"] == "subject_request"
    (_officer, browser), _ = officers
    queue = browser.get("/api/v1/reviews").json()
    assert [r["decision_id"] for r in queue] == [str(decision.id)]
    other = "good" if decision.label == "bad" else "bad"
    missing_reason = post(
        browser, f"/api/v1/reviews/{queue[0]['id']}/decision", {"final_label": other, "reason": ""}
    )
    assert missing_reason.status_code == 422
    decided = post(
        browser,
        f"/api/v1/reviews/{queue[0]['id']}/decision",
        {"final_label": other, "reason": "Income proof was misread."},
    )
    assert decided.status_code == 200
    assert decided.json()["status"] == "overridden"
    export = browser.get("/api/v1/subjects/applicant-7/export").json()
    assert export["decisions"][0]["effective_outcome"] == other
    assert export["decisions"][0]["review"]["reason"] == "Income proof was misread."
    again = post(
        browser, f"/api/v1/reviews/{queue[0]['id']}/decision", {"final_label": other, "reason": "x"}
    )
    assert again.status_code == 409


def test_the_family_rule_sends_low_confidence_decisions_to_review(client, caller, family):
    family.review_below_confidence = 1.0  # every decision is below full confidence
    family.save()
    decision = _decision(client, caller)
    review = Review.objects.get(decision=decision)
    assert review.trigger == "rule"
    assert "Low confidence" in review.request_reason


# --- Subject access -----------------------------------------------------------------------------


def test_subject_access_exports_consents_decisions_and_explanations(client, caller, officers):
    decision = _decision(client, caller)
    (_, browser), _ = officers
    body = browser.get("/api/v1/subjects/applicant-7/export").json()
    assert body["current_consent"] == {"credit_scoring": True}
    (exported,) = body["decisions"]
    assert exported["decision_id"] == str(decision.id)
    assert exported["explanation"]["reasons"]
    page = browser.get("/compliance/subjects/export/?reference=applicant-7&format=html")
    assert page.status_code == 200
    assert "Main factors" in page.content.decode()
    unverified = Client()
    unverified.force_login(officers[0][0])
    assert unverified.get("/api/v1/subjects/applicant-7/export").status_code == 403


def test_subject_access_export_holds_a_receipt_per_decision_that_verifies(client, caller, officers):
    from gatehouse.tlog import signing
    from gatehouse.tlog.sequencer import Sequencer
    from gatehouse.tlog.verify import verify_receipt

    first = _decision(client, caller)
    second = _decision(client, caller)
    _decision(client, caller, subject="someone-else")
    (_, browser), _ = officers
    pending = browser.get("/api/v1/subjects/applicant-7/export").json()
    assert [d["receipt"]["status"] for d in pending["decisions"]] == ["pending", "pending"]
    Sequencer().drain()
    keys = signing.verifier_keys()

    download = browser.get("/compliance/subjects/export/?reference=applicant-7")
    assert download.status_code == 200
    assert "attachment" in download["Content-Disposition"]
    exported = json.loads(download.content)["decisions"]
    assert [d["decision_id"] for d in exported] == [str(first.id), str(second.id)]
    for d in exported:
        receipt = d["receipt"]
        assert receipt["record_id"] == d["decision_id"]
        assert receipt["status"] == "integrated"
        assert verify_receipt(receipt, keys).integrated
    page = browser.get("/compliance/subjects/export/?reference=applicant-7&format=html")
    html = page.content.decode()
    for d in exported:
        receipt = d["receipt"]
        assert receipt["leaf_hash"] in html
        assert (
            f"leaf index {receipt['leaf_index']} in a tree of {receipt['tree_size']} leaves" in html
        )
    assert html.count("<strong>integrated</strong>") == 2
    # The subject search page shows a summary and computes no receipts.
    summary = browser.get("/compliance/subjects/?reference=applicant-7")
    assert summary.status_code == 200
    assert exported[0]["receipt"]["leaf_hash"] not in summary.content.decode()


def test_the_subject_export_costs_a_few_queries_per_receipt_and_none_per_other_row(
    client, caller, officers
):
    from django.test.utils import CaptureQueriesContext

    from apps.compliance import selectors
    from gatehouse.tlog.sequencer import Sequencer

    officer = officers[0][0]

    def queries(**kwargs):
        Sequencer().drain()  # integrated receipts: with their proofs
        with CaptureQueriesContext(connection) as captured:
            selectors.subject_export(user=officer, reference="applicant-7", **kwargs)
        return len(captured)

    _decision(client, caller)
    one, one_summary = queries(), queries(receipts=False)
    for _ in range(3):
        _decision(client, caller)
    four, four_summary = queries(), queries(receipts=False)
    assert four_summary == one_summary  # decisions, explanations, reviews: no N+1
    # A receipt: its leaf, the checkpoint, the proof's leaf and interior hashes (one each).
    assert four - one <= 3 * 4


# --- Erasure ------------------------------------------------------------------------------------


def _everything_about(client, caller, reference, tmp_path, settings, clerk):
    """Put the subject in every store: consent, decisions (API and batch), explanation,
    review, outcome, refusal, batch files, training lineage."""
    from apps.inference import batch
    from tests.test_batch import make_csv

    decision = _decision(client, caller, subject=reference)
    post(client, f"/api/v1/decisions/{decision.id}/outcome", {"label": "bad"}, caller[1])
    post(client, f"/api/v1/decisions/{decision.id}/review", {"reason": "contest"}, caller[1])
    consent(client, caller[1], subject=reference, granted=False)
    predict(client, caller[1], subject=reference)  # refused: a refusal record
    consent(client, caller[1], subject=reference)
    data = make_csv(3).decode().replace("applicant-2", reference).encode()
    job = batch.batch_submit(
        family=decision.family,
        user=clerk,
        key=None,
        file=io.BytesIO(data),
        filename="in.csv",
        purpose="credit_scoring",
        subject_column="applicant",
        request_id="r",
    )
    assert batch.batch_run(job.pk).status == "done"
    return decision


def test_erasure_needs_a_second_verified_officer(client, caller, officers, make_user):
    _decision(client, caller)
    (_first, first_browser), (second, second_browser) = officers
    created = post(first_browser, "/api/v1/erasure-requests", {"subject": "applicant-7"})
    assert created.status_code == 201
    request_id = created.json()["id"]
    assert (
        post(first_browser, "/api/v1/erasure-requests", {"subject": "applicant-7"}).status_code
        == 409
    )
    assert post(first_browser, "/api/v1/erasure-requests", {"subject": "nobody"}).status_code == 404
    own = post(first_browser, f"/api/v1/erasure-requests/{request_id}/approve", {"reason": "ok"})
    assert (own.status_code, own.json()["code"]) == (403, "four_eyes")
    unverified = Client()
    unverified.force_login(second)
    assert (
        post(
            unverified, f"/api/v1/erasure-requests/{request_id}/approve", {"reason": "ok"}
        ).status_code
        == 403
    )
    approved = post(
        second_browser,
        f"/api/v1/erasure-requests/{request_id}/approve",
        {"reason": "valid request"},
    )
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    again = post(second_browser, f"/api/v1/erasure-requests/{request_id}/reject", {"reason": "x"})
    assert again.status_code == 409
    from auditlog.models import LogEntry

    assert LogEntry.objects.filter(object_pk=request_id).count() >= 2  # created and decided


def _scan(needles: list[str], store: Path) -> list[str]:
    """Every table and every stored file that still contains one of ``needles``."""
    hits = []
    for model in django_apps.get_models():
        table = model._meta.db_table
        columns = [f.column for f in model._meta.concrete_fields]
        with connection.cursor() as cursor:
            names = ", ".join(connection.ops.quote_name(c) for c in columns)
            # Table and column names come from the model registry, not from input.
            cursor.execute(f"SELECT {names} FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                text = " ".join(
                    bytes(v).hex() if isinstance(v, bytes | memoryview) else str(v) for v in row
                )
                hits.extend(f"{table}: {n[:12]}" for n in needles if n in text)
    for path in store.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits.extend(f"file {path.name[:12]}: {n[:12]}" for n in needles if n.encode() in data)
    return hits


@pytest.fixture
def clerk(make_user, family):
    user = make_user(Role.BUSINESS_USER, username="clerk")
    registry_services.family_grant(
        family=family, to=user, actions=[FamilyAction.VIEW, FamilyAction.PREDICT]
    )
    return user


def test_an_erasure_leaves_zero_hits_in_every_store_and_the_log_verifies(
    client, caller, officers, settings, tmp_path, clerk, v1, django_capture_on_commit_callbacks
):
    reference = "subject-1"  # also in v1's training lineage
    pseudonym = pseudonymise(reference)
    _everything_about(client, caller, reference, tmp_path, settings, clerk)
    _decision(client, caller, subject="bystander")  # must survive untouched
    store = Path(settings.ARTIFACT_STORE_DIR)
    needles = [reference, pseudonym, pseudonym[:16]]
    before = _scan(needles, store)
    assert len({h.split(":")[0] for h in before}) >= 6, before  # the subject is everywhere
    (_first, first_browser), (_second, second_browser) = officers
    request_id = post(first_browser, "/api/v1/erasure-requests", {"subject": reference}).json()[
        "id"
    ]
    post(second_browser, f"/api/v1/erasure-requests/{request_id}/approve", {"reason": "Art. 17"})

    with django_capture_on_commit_callbacks(execute=True):  # replaced files are deleted on commit
        done = erasure.erasure_execute(request_id=request_id)

    assert done.status == "done"
    leftovers = _scan(needles, store)
    assert leftovers == [], leftovers
    assert integrated_and_verified().ok
    assert Decision.objects.filter(erased_at__isnull=False).count() >= 2
    assert Decision.objects.filter(subject_pseudonym=pseudonymise("bystander")).count() == 1
    v1.refresh_from_db()
    assert (v1.retrain_required, v1.erased_subjects, v1.training_subject_count) == (True, 1, 2)
    certificate = second_browser.get(f"/api/v1/erasure-requests/{request_id}/certificate").json()
    assert certificate["erased"]["decision_payloads"] >= 2
    assert certificate["erased"]["consents"] == 3
    assert certificate["approved_by"] == "dora"
    assert reference not in json.dumps(certificate)
    assert pseudonym[:16] not in json.dumps(certificate)
    # Idempotent: running it again changes nothing.
    assert erasure.erasure_execute(request_id=request_id).counts == done.counts


def test_an_erasure_interrupted_between_steps_resumes_with_nothing_half_erased(
    client, caller, officers, monkeypatch
):
    _decision(client, caller)
    (_, first_browser), (_, second_browser) = officers
    request_id = post(first_browser, "/api/v1/erasure-requests", {"subject": "applicant-7"}).json()[
        "id"
    ]
    post(second_browser, f"/api/v1/erasure-requests/{request_id}/approve", {"reason": "ok"})
    real = erasure._step_records

    def crash(request, subject):
        real(request, subject)  # the step's writes happen, then the worker dies mid-step
        raise SystemExit("killed")

    monkeypatch.setattr(
        erasure, "STEPS", [(n, crash if n == "records" else f) for n, f in erasure.STEPS]
    )
    with pytest.raises(SystemExit):
        erasure.erasure_execute(request_id=request_id)
    # The killed step rolled back as a whole: its records are intact, not half-erased.
    assert Decision.objects.filter(erased_at__isnull=False).count() == 0
    assert Explanation.objects.count() == 0  # the step before it had committed
    monkeypatch.setattr(
        erasure, "STEPS", [(n, real if n == "records" else f) for n, f in erasure.STEPS]
    )
    done = erasure.erasure_execute(request_id=request_id)
    assert done.status == "done"
    assert done.counts["steps"] == [n for n, _ in erasure.STEPS]
    assert Decision.objects.filter(erased_at__isnull=False).count() == 1
    assert integrated_and_verified().ok


def test_a_flagged_version_cannot_be_promoted(family, approver, v1):
    v2 = register(family, family.owner, Registration(version="2.0.0"))
    registry_services.version_validate(version=v2, user=family.owner)
    registry_services.versions_erase_subject(pseudonym=pseudonymise("subject-2"))
    v2.refresh_from_db()
    assert v2.retrain_required
    with pytest.raises(Conflict) as refused:
        registry_services.version_approve(version=v2, user=approver, reason="fine")
    assert refused.value.error_code == "retrain_required"


def test_an_alert_is_raised_once_before_the_deadline(client, caller, officers):
    from datetime import timedelta

    from django.utils import timezone

    _decision(client, caller)
    (_officer, browser), _ = officers
    request_id = post(browser, "/api/v1/erasure-requests", {"subject": "applicant-7"}).json()["id"]
    assert erasure.deadlines_check(warn_days=7) == 0
    ErasureRequest.objects.filter(pk=request_id).update(deadline=timezone.now() + timedelta(days=3))
    assert erasure.deadlines_check(warn_days=7) == 1
    assert erasure.deadlines_check(warn_days=7) == 0
    assert Alert.objects.get(kind="erasure_deadline")


def test_the_erasure_page_lists_requests_with_a_countdown(client, caller, officers):
    _decision(client, caller)
    (_, browser), (_, second) = officers
    assert browser.post("/compliance/erasure/", {"reference": "applicant-7"}).status_code == 302
    page = browser.get("/compliance/erasure/").content.decode()
    assert "days left" in page
    assert "Awaiting a second officer" in page
    assert "Approve erasure" in second.get("/compliance/erasure/").content.decode()


# --- Bias reports -------------------------------------------------------------------------------


def test_a_bias_report_on_validation_data_suppresses_small_groups(v1, officers):
    report = bias.report_create(version=v1, source=BiasReport.Source.VALIDATION)
    age = report.results["attributes"]["age"]
    assert age["compared"]
    assert "demographic_parity_difference" in age
    sex = report.results["attributes"]["sex"]
    assert set(sex["groups"]) == {"female", "male"}
    assert all(g["count"] >= report.min_group_size for g in sex["groups"].values())
    (_, browser), _ = officers
    page = browser.get(f"/compliance/bias/{report.pk}/")
    assert page.status_code == 200
    assert b"Demographic parity difference" in page.content
    csv_text = browser.get(f"/compliance/bias/{report.pk}/?format=csv").content.decode()
    assert csv_text.startswith("attribute,group,count")


def test_a_crossed_threshold_raises_an_alert(v1):
    from apps.registry.signature import Signature

    signature = Signature.model_validate(v1.signature)
    rows = [{"sex": "female", "age": 30}] * 50 + [{"sex": "male", "age": 30}] * 50
    y_true = ["bad"] * 50 + ["good"] * 50
    y_pred = ["bad"] * 50 + ["good"] * 50  # every woman selected, no man: parity gap 1.0
    results = bias.compute(signature, rows, y_true, y_pred, min_group_size=20)
    assert results["attributes"]["sex"]["demographic_parity_difference"] == 1.0
    tiny = bias.compute(signature, rows[:60], y_true[:60], y_pred[:60], min_group_size=20)
    assert tiny["attributes"]["sex"]["suppressed"] == [{"group": "male", "count": "< 20"}]
    breaches = bias._breaches(v1, results)
    assert breaches
    assert breaches[0]["metric"] == "demographic_parity_difference"


def test_a_live_bias_report_uses_decisions_with_outcomes(client, caller, officers):
    for i in range(3):
        d = _decision(client, caller, subject=f"s-{i}")
        Outcome.objects.create(decision=d, label="bad")
    (_, browser), _ = officers
    response = post(browser, "/api/v1/bias-reports", {"family": "credit-risk", "version": "1.0.0"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["rows"] == 3
    assert body["results"]["attributes"]["sex"]["suppressed"]  # 3 < k: suppressed


# --- Retention ---------------------------------------------------------------------------------


def test_retention_purges_expired_records_and_the_log_still_verifies(client, caller, family):
    from datetime import timedelta

    from apps.inference import selectors as inference_selectors
    from gatehouse.tlog import signing
    from gatehouse.tlog.models import LogLeaf
    from gatehouse.tlog.verify import verify_receipt

    old = [_decision(client, caller, subject=f"old-{i}") for i in range(3)]
    kept = _decision(client, caller, subject="recent")
    assert integrated_and_verified().ok
    # A purge run at a time when the first three are past the family's retention, not the last.
    now = kept.created_at + timedelta(days=family.retention_days) - timedelta(microseconds=1)
    assert old[-1].created_at < kept.created_at - timedelta(microseconds=1)
    result = services.retention_purge(now=now)
    assert (result["expired"], result["deleted"]) == (3, 3)
    assert list(Explanation.objects.values_list("decision_id", flat=True)) == [kept.pk]
    assert not Decision.objects.filter(pk__in=[d.pk for d in old]).exists()
    assert Decision.objects.filter(pk=kept.pk, erased_at__isnull=True).exists()
    purged = LogLeaf.objects.filter(ref__in=[str(d.pk) for d in old])
    assert sorted(purged.values_list("removed", flat=True)) == ["purged"] * 3
    verification = integrated_and_verified()
    assert (verification.ok, verification.removed) == (True, 3)
    # The kept record's receipt still proves its place in the tree that covers the purged ones.
    receipt = inference_selectors.decision_receipt(decision=kept)
    assert verify_receipt(receipt, signing.verifier_keys()).integrated
    Decision.objects.filter(pk=kept.pk).update(route="canary")
    assert not integrated_and_verified().ok


def test_a_legal_hold_keeps_records_past_their_retention(client, caller, family):
    from datetime import timedelta

    from django.utils import timezone

    decision = _decision(client, caller)
    family.legal_hold = True
    family.save()
    assert services.retention_purge(now=timezone.now() + timedelta(days=9999))["expired"] == 0
    assert Decision.objects.filter(pk=decision.pk, erased_at__isnull=True).exists()


def test_a_report_crossing_a_policy_threshold_raises_an_alert(v1, settings, tmp_path):
    from apps.registry.gates import DEFAULT_POLICY

    strict = (
        Path(DEFAULT_POLICY)
        .read_text()
        .replace(
            "demographic_parity_difference = { max = 0.20 }",
            "demographic_parity_difference = { max = 0.0001 }",
        )
    )
    settings.REGISTRY_POLICY_FILE = tmp_path / "strict.toml"
    settings.REGISTRY_POLICY_FILE.write_text(strict)
    report = bias.report_create(version=v1, source=BiasReport.Source.VALIDATION)
    assert [b["metric"] for b in report.breaches if b["attribute"] == "age"] == [
        "demographic_parity_difference"
    ]
    assert Alert.objects.filter(kind="bias_threshold").count() == len(report.breaches)


def test_a_reviewer_overrides_in_the_review_page(client, caller, officers):
    decision = _decision(client, caller)
    post(client, f"/api/v1/decisions/{decision.id}/review", {"reason": "contest"}, caller[1])
    (_, browser), _ = officers
    review = Review.objects.get(decision=decision)
    assert "contest" in browser.get("/compliance/reviews/").content.decode()
    page = browser.get(f"/compliance/reviews/{review.pk}/").content.decode()
    assert "Inputs as recorded" in page
    other = "good" if decision.label == "bad" else "bad"
    empty = browser.post(f"/compliance/reviews/{review.pk}/", {"final_label": other})
    assert empty.status_code == 422
    done = browser.post(
        f"/compliance/reviews/{review.pk}/", {"final_label": other, "reason": "Misread income."}
    )
    assert done.status_code == 302
    review.refresh_from_db()
    assert (review.status, review.final_label) == ("overridden", other)


def test_a_second_officer_approves_an_erasure_in_the_page(client, caller, officers):
    _decision(client, caller)
    (_, first), (_, second) = officers
    first.post("/compliance/erasure/", {"reference": "applicant-7"})
    request = ErasureRequest.objects.get()
    url = f"/compliance/erasure/{request.pk}/approve/"
    assert first.post(url, {"reason": "mine"}).status_code == 403  # four eyes
    assert (
        second.post(f"/compliance/erasure/{request.pk}/maybe/", {"reason": "x"}).status_code == 404
    )
    assert second.post(url, {"reason": "Art. 17 request checked"}).status_code == 302
    request.refresh_from_db()
    assert (request.status, request.decided_by.username) == ("approved", "dora")
    erasure.erasure_execute(request_id=request.pk)
    assert "Certificate" in second.get("/compliance/erasure/").content.decode()
    certificate = second.get(f"/compliance/erasure/{request.pk}/certificate/")
    assert json.loads(certificate.content)["status"] == "done"


def test_explanations_left_pending_are_sent_again(client, caller, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from apps.compliance import tasks

    decision = _decision(client, caller)
    Explanation.objects.filter(decision=decision).update(
        status="pending", created_at=timezone.now() - timedelta(minutes=5)
    )
    sent = []
    monkeypatch.setattr(tasks.explain_decisions, "delay", sent.append)
    assert tasks.resume_explanations() == 1
    assert sent == [[str(decision.id)]]
    assert services.explanations_compute(sent[0]) == 1
    assert Explanation.objects.get(decision=decision).status == "done"
