"""Demo data of compliance: consent for the first credit applicants; a second officer."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group

from apps.compliance.models import Consent
from apps.compliance.services import consent_record
from apps.registry.demo_training import applicant_ref
from gatehouse.roles import Role

DEMO_CONSENTING = 10  # applicant-0001 .. applicant-0010 consent to credit scoring
NOTICE = "2026-01"


def create_demo_consents(users: dict[Role, Any]) -> None:
    officer = users[Role.COMPLIANCE_OFFICER]
    # Four eyes need two officers: in the demo, the administrator is the second one.
    users[Role.ADMIN].groups.add(Group.objects.get(name=Role.COMPLIANCE_OFFICER.value))
    if Consent.objects.exists():
        return
    for i in range(DEMO_CONSENTING):
        consent_record(
            reference=applicant_ref(i),
            purpose="credit_scoring",
            granted=True,
            notice_version=NOTICE,
            source="web",
            user=officer,
        )
