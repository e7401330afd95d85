"""Drift detection: references taken at registration, PSI and KS on synthetic shifted and
unshifted data, live rows from real decision records, one alert per drift episode."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from django.db import transaction
from django.utils import timezone

from apps.inference import records
from apps.inference import services as inference_services
from apps.inference.models import Decision, Route, RoutingConfig
from apps.monitoring import drift
from apps.monitoring.models import (
    DriftReference,
    DriftSnapshot,
    DriftStatus,
    MonitoringPolicy,
)
from apps.registry.signature import Signature
from gatehouse.models import Alert
from gatehouse.pseudonyms import pseudonymise
from tests.registry_models import SIGNATURE, Registration, _rows, register, serve

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_serving")]


def _record(version, rows: list[dict[str, Any]], route: str = Route.PRODUCTION) -> list[Decision]:
    """Record ``rows`` as decisions of ``version``, as the predict path does."""
    request = inference_services.PredictRequest(rows=rows, subject="applicant-1", request_id="t")
    with transaction.atomic():
        return records.record(
            inference_services.build_decisions(
                family=version.family,
                version=version,
                route=route,
                user=version.family.owner,
                key=None,
                request=request,
                probabilities=[[0.5, 0.5]] * len(rows),
                latency_ms=1.0,
                pseudonym=pseudonymise("applicant-1"),
            )
        )


def _live(n: int, seed: int, income_shift: float = 0.0) -> list[dict[str, Any]]:
    """Fresh rows from the distribution of the test model's validation data (``_rows``),
    income moved by ``income_shift`` kEUR."""
    rows, _labels = _rows(n, seed)
    return [{**row, "income": round(row["income"] + income_shift, 2)} for row in rows]


# Income is uniform on [5, 120] in the validation data: its standard deviation is 115/sqrt(12).
INCOME_STD = 115 / 12**0.5


# --- A synthetic reference, larger than a validation file, for the statistics ----------------

SYNTHETIC = Signature.model_validate(
    {
        "features": [
            {"name": "income", "type": "float"},
            {"name": "children", "type": "int", "minimum": 0},
            {"name": "housing", "type": "category", "allowed": ["own", "rent", "free"]},
            {"name": "employed", "type": "bool"},
            {"name": "branch", "type": "int"},
            {"name": "email", "type": "category", "allowed": ["a", "b"], "pii": True},
            {
                "name": "sex",
                "type": "category",
                "allowed": ["female", "male"],
                "protected": True,
                "model_input": False,
            },
        ],
        "output": {"labels": ["good", "bad"]},
    }
)
HOUSING = ["own", "rent", "free"]


def _synthetic(
    n: int,
    seed: int,
    *,
    income_shift: float = 0.0,
    housing: tuple[float, float, float] = (0.6, 0.3, 0.1),
    employed: float = 0.7,
    branch: int = 5,
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    income = rng.normal(50 + income_shift * 10, 10, n)
    children = rng.poisson(1.2, n)
    houses = rng.choice(HOUSING, size=n, p=list(housing))
    jobs = rng.random(n) < employed
    return [
        {
            "income": float(income[i]),
            "children": int(children[i]),
            "housing": str(houses[i]),
            "employed": bool(jobs[i]),
            "branch": branch,
            "email": "a",
            "sex": "female",
        }
        for i in range(n)
    ]


@pytest.fixture
def reference(v1) -> DriftReference:
    """An unsaved reference of 5000 synthetic rows (income ~ N(50, 10) in std units of 10)."""
    features = drift.reference_features(SYNTHETIC, _synthetic(5000, seed=1))
    return DriftReference(version=v1, rows=5000, features=features)


def _policy(**overrides: Any) -> MonitoringPolicy:
    return MonitoringPolicy(**overrides)


# --- Reference ------------------------------------------------------------------------------


def test_the_reference_holds_deciles_a_sorted_sample_and_every_allowed_value(reference):
    features = reference.features
    assert set(features) == {"income", "children", "housing", "employed", "branch"}  # no pii,
    income = features["income"]  # no attribute that is not a model input
    assert income["kind"] == "numeric"
    assert len(income["edges"]) == 9
    assert income["edges"] == sorted(income["edges"])
    assert income["proportions"] == pytest.approx([0.1] * 10, abs=0.002)
    assert len(income["sample"]) == drift.SAMPLE_SIZE
    assert income["sample"] == sorted(income["sample"])
    # Poisson counts tie: deciles merge, fewer bins, shares still sum to one.
    assert len(features["children"]["edges"]) < 9
    assert sum(features["children"]["proportions"]) == pytest.approx(1)
    assert features["housing"] == {
        "kind": "categorical",
        "proportions": pytest.approx({"own": 0.6, "rent": 0.3, "free": 0.1}, abs=0.02),
    }
    assert set(features["employed"]["proportions"]) == {"true", "false"}


def test_an_allowed_value_absent_from_the_data_is_in_the_reference_with_share_zero():
    signature = Signature.model_validate(SIGNATURE)
    rows = [{"income": 10.0, "age": 30, "housing": "own", "sex": "male"}] * 5
    features = drift.reference_features(signature, rows)
    assert features["housing"]["proportions"] == {"own": 1.0, "rent": 0.0, "free": 0.0}


def test_a_constant_feature_sees_moves_both_up_and_down(reference):
    branch = reference.features["branch"]
    assert branch["proportions"] == [0.0, 1.0, 0.0]
    policy = _policy()
    for moved in (4, 6):
        _status, features = drift.compare(reference, _synthetic(1000, seed=2, branch=moved), policy)
        assert features["branch"]["status"] == DriftStatus.DRIFT
    _status, features = drift.compare(reference, _synthetic(1000, seed=2), policy)
    assert features["branch"]["status"] == DriftStatus.OK
    assert features["branch"]["psi"] == 0


# --- Comparison ------------------------------------------------------------------------------


def test_a_fresh_sample_of_the_same_distribution_is_ok_by_psi_and_ks(reference):
    status, features = drift.compare(reference, _synthetic(1000, seed=2), _policy())
    assert status == DriftStatus.OK
    assert {f["status"] for f in features.values()} == {"ok"}
    assert features["income"]["psi"] < 0.1
    assert features["income"]["ks_p"] > 0.01
    assert features["housing"]["psi"] < 0.1
    assert "ks_p" not in features["housing"]  # KS is for numbers only


def test_income_shifted_by_two_standard_deviations_is_drift_by_psi_and_ks(reference):
    status, features = drift.compare(reference, _synthetic(1000, seed=2, income_shift=2), _policy())
    assert status == DriftStatus.DRIFT
    income = features["income"]
    assert income["status"] == DriftStatus.DRIFT
    assert income["psi"] > 1
    assert income["ks_p"] < 1e-10
    assert income["live"][-1] > 0.7  # most live values are above every reference decile
    assert features["housing"]["status"] == DriftStatus.OK


def test_a_small_shift_is_caught_by_the_ks_test_while_psi_stays_below_warning(reference):
    live = _synthetic(2000, seed=3, income_shift=0.25)
    status, features = drift.compare(reference, live, _policy())
    income = features["income"]
    assert income["psi"] < 0.1
    assert income["ks_p"] < 0.01
    assert status == income["status"] == DriftStatus.DRIFT
    # With the KS test off (p never below 0), PSI alone says ok.
    status, features = drift.compare(reference, live, _policy(ks_p_alert=0))
    assert status == features["income"]["status"] == DriftStatus.OK


def test_psi_alone_flags_a_numeric_shift_when_the_ks_test_is_off(reference):
    status, features = drift.compare(
        reference, _synthetic(1000, seed=2, income_shift=2), _policy(ks_p_alert=0)
    )
    assert status == features["income"]["status"] == DriftStatus.DRIFT


def test_a_changed_category_share_is_drift_and_a_smaller_change_a_warning(reference):
    policy = _policy()
    status, features = drift.compare(
        reference, _synthetic(1000, seed=2, housing=(0.3, 0.5, 0.2)), policy
    )
    assert status == features["housing"]["status"] == DriftStatus.DRIFT
    assert features["housing"]["psi"] >= 0.25
    assert features["housing"]["live"]["rent"] == pytest.approx(0.5, abs=0.04)
    status, features = drift.compare(
        reference, _synthetic(1000, seed=2, housing=(0.42, 0.4, 0.18)), policy
    )
    assert 0.1 <= features["housing"]["psi"] < 0.25
    assert status == features["housing"]["status"] == DriftStatus.WARNING


def test_a_changed_bool_share_is_drift(reference):
    status, features = drift.compare(reference, _synthetic(1000, seed=2, employed=0.3), _policy())
    assert status == features["employed"]["status"] == DriftStatus.DRIFT


def test_thresholds_come_from_the_policy(reference):
    live = _synthetic(1000, seed=2, housing=(0.42, 0.4, 0.18))
    status, _features = drift.compare(reference, live, _policy(psi_warning=0.5, psi_alert=0.9))
    assert status == DriftStatus.OK
    status, _features = drift.compare(reference, live, _policy(psi_alert=0.1))
    assert status == DriftStatus.DRIFT


def test_a_live_value_the_reference_never_saw_counts_towards_psi(reference):
    live = _synthetic(1000, seed=2)
    for row in live[:300]:
        row["housing"] = "boat"
    _status, features = drift.compare(reference, live, _policy())
    assert features["housing"]["live"]["boat"] == 0.3
    assert features["housing"]["status"] == DriftStatus.DRIFT


def test_fewer_live_rows_than_the_minimum_are_insufficient(reference):
    status, features = drift.compare(
        reference, _synthetic(99, seed=2, income_shift=5), _policy(drift_min_rows=100)
    )
    assert status == DriftStatus.INSUFFICIENT
    assert features["income"] == {"kind": "numeric", "rows": 99, "status": "insufficient"}


def test_psi_is_zero_for_equal_shares_and_finite_for_empty_bins():
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0
    value = drift.psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5])
    expected = (1e-4 - 0.5) * np.log(1e-4 / 0.5) + (0.5 - 1e-4) * np.log(0.5 / 1e-4)
    assert value == pytest.approx(expected)


# --- References at registration -------------------------------------------------------------


def test_the_reference_is_built_when_a_version_is_registered(
    family, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        version = register(family, family.owner)
    reference = DriftReference.objects.get(version=version)
    assert reference.rows == version.validation_rows == 400
    assert set(reference.features) == {"income", "age", "housing", "sex"}
    assert reference.features["sex"]["kind"] == "categorical"
    assert len(reference.features["income"]["sample"]) == 400


def test_a_registration_that_rolls_back_builds_no_reference(
    family, django_capture_on_commit_callbacks
):
    def register_then_fail() -> None:
        with transaction.atomic():
            register(family, family.owner)
            raise RuntimeError("the caller's transaction fails after the registration")

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
    ):
        register_then_fail()
    assert callbacks == []
    assert not DriftReference.objects.exists()


def test_a_failing_reference_build_is_logged_and_does_not_fail_the_registration(
    family, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    def broken(version):
        raise OSError("disk full")

    monkeypatch.setattr(drift, "build_reference", broken)
    with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
        version = register(family, family.owner)
    assert version.pk is not None
    assert not DriftReference.objects.exists()
    assert "drift reference of model version" in caplog.text


def test_a_version_without_a_reference_gets_one_at_its_first_check(v1):
    assert not DriftReference.objects.filter(version=v1).exists()  # no commit in this test
    first = drift.reference_for(v1)
    assert drift.reference_for(v1).pk == first.pk
    assert drift.build_reference(v1).pk == first.pk  # idempotent: updated, not duplicated
    assert DriftReference.objects.filter(version=v1).count() == 1


# --- Checks over recorded decisions ---------------------------------------------------------


def test_unshifted_live_decisions_are_ok(v1):
    _record(v1, _live(500, seed=11))
    snapshot = drift.check_version(v1)
    assert snapshot.status == DriftStatus.OK
    assert snapshot.rows == 500
    assert snapshot.family_id == v1.family_id
    assert set(snapshot.features) == {"income", "age", "housing", "sex"}
    assert not Alert.objects.filter(kind="drift").exists()


def test_shifted_income_is_drift_and_alerts_once_while_it_lasts(v1):
    _record(v1, _live(500, seed=11, income_shift=2 * INCOME_STD))
    first = drift.check_version(v1)
    assert first.status == DriftStatus.DRIFT
    assert first.features["income"]["status"] == DriftStatus.DRIFT
    assert first.features["housing"]["status"] == DriftStatus.OK
    (alert,) = Alert.objects.filter(kind="drift")
    assert alert.severity == "warning"
    assert alert.subject == str(v1)
    assert "income" in alert.title
    assert "housing" not in alert.title
    assert "PSI=" in alert.detail

    assert drift.check_version(v1).status == DriftStatus.DRIFT
    assert Alert.objects.filter(kind="drift").count() == 1  # still the same episode


def test_a_new_drift_after_recovery_alerts_again(v1):
    MonitoringPolicy.objects.create(family=v1.family, drift_window=500)
    _record(v1, _live(500, seed=11, income_shift=2 * INCOME_STD))
    assert drift.check_version(v1).status == DriftStatus.DRIFT
    _record(v1, _live(500, seed=12))
    assert drift.check_version(v1).status == DriftStatus.OK
    _record(v1, _live(500, seed=13, income_shift=2 * INCOME_STD))
    assert drift.check_version(v1).status == DriftStatus.DRIFT
    assert Alert.objects.filter(kind="drift").count() == 2


def test_too_few_decisions_are_insufficient_and_raise_no_alert(v1):
    _record(v1, _live(99, seed=11, income_shift=2 * INCOME_STD))
    snapshot = drift.check_version(v1)
    assert snapshot.status == DriftStatus.INSUFFICIENT
    assert snapshot.rows == 99
    assert not Alert.objects.exists()


def test_shadow_and_erased_decisions_are_not_live_inputs(v1):
    shifted = _live(500, seed=11, income_shift=2 * INCOME_STD)
    _record(v1, shifted, route=Route.SHADOW)
    erased = _record(v1, shifted)
    Decision.objects.filter(pk__in=[d.pk for d in erased]).update(erased_at=timezone.now())
    _record(v1, _live(500, seed=12))
    with_nothing = _record(v1, shifted[:50])
    Decision.objects.filter(pk__in=[d.pk for d in with_nothing]).update(inputs=None)
    snapshot = drift.check_version(v1)
    assert snapshot.rows == 500
    assert snapshot.status == DriftStatus.OK


def test_only_the_last_drift_window_decisions_count(v1):
    MonitoringPolicy.objects.create(family=v1.family, drift_window=300)
    _record(v1, _live(500, seed=11, income_shift=2 * INCOME_STD))
    _record(v1, _live(300, seed=12))
    snapshot = drift.check_version(v1)
    assert snapshot.rows == 300
    assert snapshot.status == DriftStatus.OK


def test_a_family_without_a_policy_row_uses_the_defaults(family):
    policy = drift.policy_for(family)
    assert policy.pk is None
    assert (policy.drift_window, policy.drift_min_rows) == (500, 100)
    assert (policy.psi_warning, policy.psi_alert, policy.ks_p_alert) == (0.1, 0.25, 0.01)
    saved = MonitoringPolicy.objects.create(family=family, psi_alert=0.5)
    assert drift.policy_for(family).pk == saved.pk


def test_check_all_checks_production_staging_and_canary_versions_and_skips_failures(
    family, approver, v1, caplog
):
    staged = serve(family, family.owner, approver, "2.0.0", target="staging")
    canary = serve(family, family.owner, approver, "3.0.0", target="")
    register(family, family.owner, Registration(version="4.0.0"))  # only registered: not watched
    RoutingConfig.objects.update_or_create(
        family=family, defaults={"canary_version": canary, "canary_percent": 10}
    )
    snapshots = drift.check_all()
    assert {s.version_id for s in snapshots} == {v1.pk, staged.pk, canary.pk}
    assert all(s.status == DriftStatus.INSUFFICIENT for s in snapshots)

    # A version whose reference cannot be taken is logged and skipped; the others are checked.
    DriftReference.objects.filter(version=staged).delete()
    type(staged).objects.filter(pk=staged.pk).update(validation_sha256="")
    with caplog.at_level(logging.ERROR):
        assert {s.version_id for s in drift.check_all()} == {v1.pk, canary.pk}
    assert f"drift check of {staged} failed" in caplog.text


# --- Selectors ------------------------------------------------------------------------------


def test_the_dashboard_reads_the_latest_snapshot_per_family_and_a_version_history(
    family, approver, v1, other_family
):
    canary = serve(family, family.owner, approver, "2.0.0", target="")
    _record(v1, _live(500, seed=11))
    drift.check_version(v1)
    latest_production = drift.check_version(v1)
    drift.check_version(canary)  # later, but the production version's snapshot is shown
    latest = drift.latest_snapshots([family, other_family])
    assert latest == {family.pk: latest_production}
    by_version = drift.latest_version_snapshots([family])
    assert set(by_version) == {v1.pk, canary.pk}
    assert [s.pk for s in drift.history(v1)] == [
        s.pk for s in DriftSnapshot.objects.filter(version=v1).order_by("-computed_at", "-pk")
    ]
    assert len(drift.history(v1, limit=1)) == 1
    assert drift.latest_snapshots([other_family]) == {}
