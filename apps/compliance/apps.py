from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "apps.compliance"
    label = "compliance"
    verbose_name = "Compliance"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from apps.compliance import demo, services
        from apps.compliance.models import Consent, ErasureRequest, Review
        from apps.inference import policy
        from gatehouse import extensions
        from gatehouse.roles import Role

        # Consent is checked before every prediction; explanations and review rules run when
        # served decisions are recorded, in the same transaction.
        policy.register_check(services.consent_check)
        policy.register_recorded_hook(services.on_decisions_recorded)
        # Human decisions are audited. Subjects and references are not: an audit entry would
        # copy the reference, which only an erasure may remove.
        auditlog.register(Consent)
        auditlog.register(Review, exclude_fields=["subject_pseudonym"])
        auditlog.register(ErasureRequest, exclude_fields=["subject"])
        # An erasure deletes the audit entries of these (apps/compliance/erasure.py); the log
        # accepts their removal, and no other audit entry's.
        from gatehouse.tlog import audit

        audit.erasable_models.update(
            {"compliance.consent", "compliance.review", "inference.outcome"}
        )
        extensions.register_demo_step(demo.create_demo_consents)
        officers = frozenset({Role.COMPLIANCE_OFFICER, Role.ADMIN})
        for label, url, roles, order, description in (
            (
                "Subjects",
                "compliance:subjects",
                officers,
                40,
                "Find a data subject: consents, decisions, explanations, access export.",
            ),
            (
                "Reviews",
                "compliance:reviews",
                frozenset({Role.COMPLIANCE_OFFICER, Role.APPROVER}),
                41,
                "Decisions waiting for a human to confirm or override them.",
            ),
            (
                "Erasure",
                "compliance:erasures",
                officers,
                42,
                "Erasure requests, their deadlines, four-eyes decisions and certificates.",
            ),
            (
                "Bias",
                "compliance:bias_reports",
                officers,
                43,
                "Fairness of the models in production, by protected group.",
            ),
        ):
            extensions.register_nav(
                extensions.NavItem(label, url, roles, order=order, description=description)
            )
