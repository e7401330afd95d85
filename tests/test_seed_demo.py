"""The demo seed: users per role, real trained models taken through the governed lifecycle."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from apps.registry import selectors
from apps.registry.models import ModelVersion, VersionStatus
from gatehouse.demo import DEMO_USERNAMES
from gatehouse.roles import Role

pytestmark = pytest.mark.django_db


def test_seed_demo_trains_registers_approves_and_deploys(
    settings, tmp_path, capsys, monkeypatch, django_capture_on_commit_callbacks
):
    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"
    packaged: list[int] = []
    monkeypatch.setattr("apps.registry.services._enqueue_packaging", packaged.append)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo")
    out = capsys.readouterr().out
    assert all(name in out for name in DEMO_USERNAMES.values())
    status = {
        (v.family.slug, v.version): v.status for v in ModelVersion.objects.select_related("family")
    }
    assert status == {
        ("credit-risk", "1.0.0"): VersionStatus.PRODUCTION,
        ("digits", "1.0.0"): VersionStatus.PRODUCTION,
        ("credit-risk", "2.0.0"): VersionStatus.VALIDATED,
    }
    credit = ModelVersion.objects.get(family__slug="credit-risk", version="1.0.0")
    assert 0.7 <= credit.metrics["overall"]["accuracy"] < 0.85
    assert credit.training_subject_count == 700
    assert credit.metrics["fairness"]["sex"]["demographic_parity_difference"] <= 0.2
    from django.contrib.auth import get_user_model

    approver = get_user_model().objects.get(username=DEMO_USERNAMES[Role.APPROVER])
    queue = selectors.approval_queue(user=approver)
    assert [(v.family.slug, v.version) for v in queue] == [("credit-risk", "2.0.0")]
    assert len(packaged) == 2  # the two approvals queued their TorchServe packaging

    call_command("seed_demo")  # idempotent: nothing new, no second set of logins
    assert ModelVersion.objects.count() == 3
    assert "exist already" in capsys.readouterr().out
