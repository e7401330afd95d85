"""Access-control matrix (checklist items 10 and 11): every endpoint x every caller x own/foreign
object -> the expected answer.

The endpoints are *discovered*, not listed: every pattern of the URL configuration (walked
recursively) and every operation of the NinjaAPI's OpenAPI schema. ``RULES`` classifies each of
them; an endpoint without a rule fails ``test_every_endpoint_has_a_rule``, so a new endpoint
cannot ship unclassified. Not application endpoints, and so excluded: static files, the Django
admin (``OTPAdminSite``; a smoke check below) and the API docs pages.

Callers: anonymous; the six roles, plus ``admin_role`` (the admin group without superuser; the
demo ``admin`` is a superuser); API keys with and without the action an endpoint needs. The
2FA roles use a session verified with the second factor; business users, API consumers and
model owners use a plain session (they owe no code), so endpoints that need a *verified*
session refuse them with 403 ``otp_required``.

Objects: "own" is an object inside the caller's reach (family ``credit-risk``, on which the
roles hold their demo grants; a decision, batch job, erasure request made by the caller or its
key), "foreign" one outside it (family ``fraud-risk`` of another owner; a decision, batch job,
key of an outsider; an erasure request of a second officer; a review on the foreign family).

Expected answers: ``OK`` (the access check passed), ``DENY`` (403: the caller sees the object or
endpoint but its role, permission, key action or session may not do this), ``HIDE`` (404: the
object is not the caller's to see; its existence is not told), ``UNAUTH`` (no credentials: 401
on the API, a redirect to the login page on pages). An exact status may also be given.

Harmless requests: each cell runs inside a savepoint that is rolled back, so a write that passes
the check (approve, revoke, outcome...) leaves nothing for the next cell; no commit happens, so
no task is enqueued. Bodies are *schema-valid* on purpose: ninja validates the body before the
view runs its access checks, so an empty body would answer 422 to everyone and hide the
authorization answer. Where a cell passes the check, a 409 or 422 raised by the service after
the check (a version that is not approved yet, a form left empty, an unknown canary version)
counts as OK: the point is the authorization answer, not the business rule.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from apps.registry import services as registry_services
from apps.registry.permissions import FamilyAction
from apps.registry.schemas import FamilyIn
from gatehouse import services as gatehouse_services
from gatehouse.roles import Role
from tests.registry_models import Registration, register, serve

OK, DENY, HIDE, UNAUTH = "ok", "403", "404", "unauth"
MIN_CELLS = 900  # the matrix below has ~1300 cells; generation must not silently collapse

FAM_A, FAM_B = "credit-risk", "fraud-risk"
ROW = {"income": 40.0, "age": 35, "housing": "rent", "sex": "female"}
CSV = b"applicant,income,age,housing,sex\napplicant-1,40,35,rent,female\n"

SESSION_CALLERS = (
    "business_user",
    "api_consumer",
    "model_owner",
    "model_owner_2fa",  # the same model owner, in a session verified with an enrolled 2FA
    "approver",
    "compliance_officer",
    "admin",
    "admin_role",
)
# key name -> (owning caller, actions)
KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "key:predict": ("api_consumer", ("view", "predict")),
    "key:view": ("api_consumer", ("view",)),
    "key:subjects": ("api_consumer", ("subjects",)),
    "key:manage": ("model_owner", ("view", "manage")),
    "key:owner-view": ("model_owner", ("view",)),
    "key:officer": ("compliance_officer", ("view", "predict", "manage", "subjects")),
}
API_CALLERS = ("anon", *SESSION_CALLERS, *KEYS)
# Pages ignore API keys: a key sent to a page is an anonymous request.
PAGE_CALLERS = ("anon", *SESSION_CALLERS, "key:officer")

# What each caller's *user* holds on the own family (credit-risk); the foreign family grants
# nothing to any caller. ``admin`` is a superuser and holds everything everywhere.
GRANTS: dict[str, set[str]] = {
    "business_user": {"view", "predict"},
    "api_consumer": {"view", "predict"},
    "model_owner": {"view", "manage"},
    "approver": {"view", "approve"},
    "compliance_officer": {"view"},
    "admin_role": set(),
}
VERIFIED = {"model_owner_2fa", "approver", "compliance_officer", "admin", "admin_role"}
SAME_USER = {"model_owner_2fa": "model_owner"}


def _user_of(caller: str) -> str:
    return KEYS[caller][0] if caller in KEYS else SAME_USER.get(caller, caller)


def _actions(caller: str) -> tuple[str, ...] | None:
    return KEYS[caller][1] if caller in KEYS else None


def _holds(caller: str, perm: str, obj: str) -> bool:
    user = _user_of(caller)
    if user == "admin":
        return True
    return obj == "own" and perm in GRANTS.get(user, set())


# --- Rule builders: each returns {obj: {caller: expected}} -------------------------------------

Expect = dict[str, dict[str, Any]]


def _table(callers: tuple[str, ...], objs: tuple[str, ...], fn: Callable[..., Any]) -> Expect:
    return {o: {c: (UNAUTH if c == "anon" else fn(c, o)) for c in callers} for o in objs}


def family_op(
    perm: str,
    key_action: str,
    *,
    key_view: bool = True,
    roles: tuple[str, ...] = (),
    hide_without_perm: bool = False,
    verified: bool = False,
) -> Callable[..., Any]:
    """A family (or version) endpoint: the key action first (403), the family unseen 404,
    seen without ``perm`` 403 (or 404 where the page hides it), a role requirement 403."""

    def rule(c: str, o: str) -> Any:
        actions = _actions(c)
        if actions is not None:
            if verified or key_action not in actions:
                return DENY
            if key_view and "view" not in actions:
                return HIDE
        elif verified and c not in VERIFIED:
            return DENY
        if not _holds(c, "view", o):
            return HIDE
        if not _holds(c, perm, o):
            return HIDE if hide_without_perm else DENY
        if roles and _user_of(c) not in (*roles, "admin"):
            return DENY
        return OK

    return rule


def decision_op(c: str, o: str) -> Any:
    """Own decisions (with a key: that key's); every decision for officers and admins in a
    session; the foreign family's decisions for nobody else."""
    if o == "own":
        return OK
    return OK if c in ("compliance_officer", "admin", "admin_role") else HIDE


def batch_op(c: str, o: str) -> Any:
    actions = _actions(c)
    if actions is not None and "predict" not in actions:
        return DENY
    return OK if o == "own" else HIDE


def roles_only(*allowed: str, verified: bool = False, keys: Any = DENY, other: Any = DENY) -> Any:
    def rule(c: str, o: str) -> Any:
        if c in KEYS:
            return keys(c) if callable(keys) else keys
        if verified and c not in VERIFIED:
            return DENY
        return OK if _user_of(c) in allowed else other

    return rule


def everyone(c: str, o: str) -> Any:
    return OK


def subjects_key(c: str) -> Any:
    """``may_act_for_subjects``: the key allows 'subjects' and its owner is an API consumer or
    a compliance officer."""
    return OK if "subjects" in (_actions(c) or ()) else DENY


def erasure_read(c: str, o: str) -> Any:
    if c in KEYS:
        return OK if o == "own" and "subjects" in (_actions(c) or ()) else HIDE
    return OK if c in ("compliance_officer", "admin", "admin_role") else HIDE


def erasure_decide(c: str, o: str) -> Any:
    if c in KEYS or c not in VERIFIED:
        return DENY
    if c != "compliance_officer":
        return DENY  # only compliance officers decide erasures (the admin too must be one)
    return DENY if o == "own" else OK  # four eyes: never one's own request


def review_decide(c: str, o: str) -> Any:
    if c in KEYS or c not in VERIFIED:
        return DENY
    if c in ("compliance_officer", "admin"):
        return OK
    return OK if c == "approver" and o == "own" else HIDE


def key_revoke(c: str, o: str) -> Any:
    if c in KEYS:
        return OK if o == "own" else DENY  # a key can revoke only itself (403 for any id)
    if o == "own" or c in ("admin", "admin_role"):  # admins hold gatehouse.change_apikey
        return OK
    return HIDE


def family_list(c: str, o: str) -> Any:
    """A list scoped to the caller (a key needs 'view'); never an error for a signed-in user."""
    return DENY if c in KEYS and "view" not in (_actions(c) or ()) else OK


def operate(c: str, o: str) -> Any:
    """Incident controls: the family seen (404), manage or the admin role (403), 2FA (403)."""
    if not _holds(c, "view", o):
        return HIDE
    if not (_holds(c, "manage", o) or _user_of(c) in ("admin", "admin_role")):
        return DENY
    return OK if c in VERIFIED else DENY


def metrics(c: str, o: str) -> Any:
    return OK if c == "admin" or c == "admin_role" else 401


@dataclass
class Rule:
    """One endpoint: ``method`` on ``route`` (an OpenAPI path, or a URL name for pages)."""

    method: str
    route: str
    rule: Callable[..., Any]
    obj: str | None = None  # the path parameters' kind: family, version, decision, ...
    body: Any = None  # JSON body, or a callable(world) -> JSON body
    files: dict[str, Any] | None = None  # multipart form (API) / form data (pages)
    public: bool = False
    fresh_client: bool = False
    query: str = ""
    # A list: the foreign family's slug / the foreign decision's id must not appear in the
    # answer, except for the callers (users) named in ``sees_foreign``.
    foreign_marker: str | None = None
    sees_foreign: tuple[str, ...] = ("admin",)

    @property
    def objs(self) -> tuple[str, ...]:
        return ("own", "foreign") if self.obj in OWN_FOREIGN else ("-",)


OWN_FOREIGN = {"family", "version", "decision", "batch", "key", "erasure", "review", "alert"}


def alert_ack(c: str, o: str) -> Any:
    """Alert roles only; a second factor first (403 for any id); then a model owner reaches only
    the alerts of families they may view (own), administrators and officers every alert."""
    if _user_of(c) not in ("model_owner", "compliance_officer", "admin", "admin_role"):
        return HIDE
    if c not in VERIFIED:
        return DENY
    return OK if o == "own" or _user_of(c) != "model_owner" else HIDE


VIEW = family_op("view", "view")
API_RULES: list[Rule] = [
    # Platform
    Rule("GET", "/api/v1/me", everyone),
    Rule("GET", "/api/v1/keys", roles_only(*SESSION_CALLERS)),
    Rule("POST", "/api/v1/keys/{key_id}/revoke", key_revoke, obj="key"),
    # Registry
    Rule("GET", "/api/v1/registry/families", family_list, foreign_marker="family"),
    Rule(
        "POST",
        "/api/v1/registry/families",
        roles_only(
            "model_owner", "admin", "admin_role", keys=lambda c: OK if c == "key:manage" else DENY
        ),
        body={"slug": "matrix-new", "name": "Matrix", "retention_days": 30},
    ),
    Rule("GET", "/api/v1/registry/families/{slug}", VIEW, obj="family"),
    Rule("GET", "/api/v1/registry/families/{slug}/versions", VIEW, obj="family"),
    Rule(
        "POST",
        "/api/v1/registry/families/{slug}/versions",
        family_op("manage", "manage", roles=("model_owner",)),
        obj="family",
        files={"metadata": "{}"},
    ),
    Rule("GET", "/api/v1/registry/families/{slug}/versions/{version}", VIEW, obj="version"),
    Rule(
        "POST",
        "/api/v1/registry/families/{slug}/versions/{version}/validate",
        family_op("manage", "manage"),
        obj="version",
    ),
    Rule(
        "POST",
        "/api/v1/registry/families/{slug}/versions/{version}/approve",
        family_op("approve", "-", verified=True),
        obj="version",
        body={"reason": "matrix check"},
    ),
    Rule(
        "POST",
        "/api/v1/registry/families/{slug}/versions/{version}/reject",
        family_op("approve", "-", verified=True),
        obj="version",
        body={"reason": "matrix check"},
    ),
    Rule(
        "POST",
        "/api/v1/registry/families/{slug}/versions/{version}/deploy",
        family_op("manage", "manage"),
        obj="version",
        body={"target": "staging", "reason": "matrix check"},
    ),
    Rule(
        "POST",
        "/api/v1/registry/families/{slug}/versions/{version}/retire",
        family_op("manage", "manage"),
        obj="version",
        body={"reason": "matrix check"},
    ),
    Rule("GET", "/api/v1/registry/families/{slug}/production-history", VIEW, obj="family"),
    Rule(
        "GET",
        "/api/v1/registry/approvals",
        roles_only(*map(_user_of, VERIFIED), verified=True),
        foreign_marker="family",
    ),
    Rule(
        "GET",
        "/api/v1/registry/records-of-processing",
        roles_only("compliance_officer", "admin", "admin_role", verified=True),
    ),
    # Inference
    Rule(
        "GET",
        "/api/v1/models/{family}",
        family_op("predict", "predict", key_view=False),
        obj="family",
    ),
    Rule(
        "POST",
        "/api/v1/models/{family}/predict",
        family_op("predict", "predict", key_view=False),
        obj="family",
        body={"rows": [ROW]},  # no subject: 422 after the access check, no decision
    ),
    Rule("GET", "/api/v1/models/{family}/routing", family_op("manage", "manage"), obj="family"),
    Rule(
        "PUT",
        "/api/v1/models/{family}/routing",
        family_op("manage", "manage"),
        obj="family",
        body={"canary_version": "9.9.9", "canary_percent": 10},
    ),
    Rule("GET", "/api/v1/decisions/{decision_id}", decision_op, obj="decision"),
    Rule("GET", "/api/v1/decisions/{decision_id}/receipt", decision_op, obj="decision"),
    # The log's checkpoints and keys: any signed-in caller or key (witnesses, subjects' agents).
    Rule("GET", "/api/v1/log/checkpoint", everyone),
    Rule("GET", "/api/v1/log/public-key", everyone),
    Rule("GET", "/api/v1/log/consistency", everyone, query="?first=1&second=1"),
    Rule(
        "POST",
        "/api/v1/decisions/{decision_id}/outcome",
        decision_op,
        obj="decision",
        body={"label": "good"},
    ),
    Rule(
        "POST",
        "/api/v1/models/{family}/batch",
        family_op("predict", "predict", key_view=False),
        obj="family",
        files={"file": b"nope\n1\n", "purpose": "credit_scoring", "subject_column": "a"},
    ),
    Rule("GET", "/api/v1/batch/{job_id}", batch_op, obj="batch"),
    Rule("GET", "/api/v1/batch/{job_id}/result", batch_op, obj="batch"),
    # Compliance
    Rule(
        "POST",
        "/api/v1/consents",
        roles_only("compliance_officer", keys=subjects_key),
        body={
            "subject": "applicant-1",
            "purpose": "credit_scoring",
            "granted": True,
            "notice_version": "m",
        },
    ),
    Rule(
        "GET",
        "/api/v1/subjects/{reference}/consents",
        roles_only("compliance_officer", keys=subjects_key),
    ),
    Rule(
        "GET",
        "/api/v1/subjects/{reference}/export",
        roles_only("compliance_officer", "admin", "admin_role", verified=True),
    ),
    Rule("GET", "/api/v1/decisions/{decision_id}/explanation", decision_op, obj="decision"),
    Rule(
        "POST",
        "/api/v1/decisions/{decision_id}/review",
        decision_op,
        obj="decision",
        body={"reason": "matrix check"},
    ),
    Rule(
        "GET",
        "/api/v1/reviews",
        roles_only(*map(_user_of, VERIFIED), verified=True),
        foreign_marker="decision",
        sees_foreign=("admin", "compliance_officer"),
    ),
    Rule(
        "POST",
        "/api/v1/reviews/{review_id}/decision",
        review_decide,
        obj="review",
        body={"final_label": "good", "reason": "matrix check"},
    ),
    Rule(
        "POST",
        "/api/v1/erasure-requests",
        roles_only("compliance_officer", keys=subjects_key),
        body={"subject": "applicant-9"},
    ),
    Rule("GET", "/api/v1/erasure-requests/{request_id}", erasure_read, obj="erasure"),
    Rule(
        "POST",
        "/api/v1/erasure-requests/{request_id}/approve",
        erasure_decide,
        obj="erasure",
        body={"reason": "matrix check"},
    ),
    Rule(
        "POST",
        "/api/v1/erasure-requests/{request_id}/reject",
        erasure_decide,
        obj="erasure",
        body={"reason": "matrix check"},
    ),
    Rule("GET", "/api/v1/erasure-requests/{request_id}/certificate", erasure_read, obj="erasure"),
    Rule(
        "POST",
        "/api/v1/bias-reports",
        roles_only("compliance_officer", "admin", "admin_role", verified=True),
        body=lambda w: {"family": FAM_A, "version": "1.0.0", "source": "validation"},
    ),
    Rule(
        "GET",
        "/api/v1/bias-reports/{report_id}",
        roles_only("compliance_officer", "admin", "admin_role"),
    ),
    Rule(
        "GET",
        "/api/v1/bias-reports/{report_id}/csv",
        roles_only("compliance_officer", "admin", "admin_role"),
    ),
]

PAGE_VIEW = family_op("view", "-")
PAGE_MANAGE = family_op("manage", "-")
PAGE_APPROVE = family_op("approve", "-")
PAGE_PREDICT = family_op("predict", "-", hide_without_perm=True)
OFFICERS = ("compliance_officer", "admin", "admin_role")
PAGE_RULES: list[Rule] = [
    Rule("GET", "home", everyone),
    Rule("GET", "health", everyone, public=True),
    Rule("GET", "login", everyone, public=True),
    Rule("POST", "logout", lambda c, o: 302, public=True, fresh_client=True),
    Rule("GET", "otp_setup", everyone),
    Rule("GET", "otp_verify", everyone),
    Rule("GET", "api_keys", everyone),
    Rule("POST", "api_key_revoke", key_revoke, obj="key"),
    Rule("POST", "notifications_read", everyone),
    Rule("GET", "audit_log", roles_only(*OFFICERS)),
    Rule("GET", "prometheus_metrics", metrics, public=True),
    # Registry pages
    Rule("GET", "registry:family_list", everyone, foreign_marker="family"),
    Rule("GET", "registry:family_detail", PAGE_VIEW, obj="family"),
    Rule(
        "GET",
        "registry:version_register",
        lambda c, o: (
            PAGE_MANAGE(c, o) if _user_of(c) in ("model_owner", "admin", "admin_role") else DENY
        ),
        obj="family",
    ),
    Rule("GET", "registry:version_detail", PAGE_VIEW, obj="version"),
    Rule("POST", "registry:version_validate", PAGE_MANAGE, obj="version"),
    Rule("POST", "registry:version_approve", PAGE_APPROVE, obj="version"),
    Rule("POST", "registry:version_reject", PAGE_APPROVE, obj="version"),
    Rule("POST", "registry:version_deploy", PAGE_MANAGE, obj="version"),
    Rule("POST", "registry:version_retire", PAGE_MANAGE, obj="version"),
    Rule(
        "GET",
        "registry:approval_queue",
        roles_only("approver", "admin", "admin_role"),
        foreign_marker="family",
    ),
    # Inference pages
    Rule("GET", "inference:predict_home", everyone, foreign_marker="family"),
    Rule("GET", "inference:predict_form", PAGE_PREDICT, obj="family"),
    Rule("GET", "inference:batch_page", PAGE_PREDICT, obj="family"),
    Rule("GET", "inference:decision_receipt", decision_op, obj="decision"),
    Rule("GET", "inference:log_public_key", everyone),
    Rule("GET", "serving:serving_list", everyone, foreign_marker="family"),
    Rule("GET", "serving:routing", PAGE_MANAGE, obj="family"),
    # Compliance pages
    Rule("GET", "compliance:subjects", roles_only(*OFFICERS)),
    Rule("POST", "compliance:consent_record", roles_only(*OFFICERS)),
    Rule(
        "GET",
        "compliance:subject_export",
        roles_only(*OFFICERS, verified=True),
        query="?reference=applicant-1",
    ),
    Rule("GET", "compliance:explanation", decision_op, obj="decision"),
    Rule(
        "GET",
        "compliance:reviews",
        roles_only(*map(_user_of, VERIFIED), verified=True),
        foreign_marker="decision",
        sees_foreign=("admin", "compliance_officer"),
    ),
    Rule("GET", "compliance:review_detail", review_decide, obj="review"),
    Rule("GET", "compliance:erasures", roles_only(*OFFICERS)),
    Rule("POST", "compliance:erasure_approve", erasure_decide, obj="erasure"),
    Rule("POST", "compliance:erasure_reject", erasure_decide, obj="erasure"),
    Rule("GET", "compliance:erasure_certificate", erasure_read, obj="erasure"),
    Rule("GET", "compliance:bias_reports", roles_only(*OFFICERS)),
    Rule("GET", "compliance:bias_report", roles_only(*OFFICERS)),
    # Monitoring pages
    Rule(
        "GET",
        "monitoring:dashboard",
        roles_only("model_owner", "approver", "compliance_officer", "admin", "admin_role"),
        foreign_marker="family",
        # Its alert list shows every family's alerts to administrators and officers.
        sees_foreign=("admin", "admin_role", "compliance_officer"),
    ),
    Rule(
        "GET",
        "monitoring:alerts",
        roles_only("model_owner", "compliance_officer", "admin", "admin_role", other=HIDE),
        foreign_marker="family",
        sees_foreign=("admin", "admin_role", "compliance_officer"),
    ),
    Rule("POST", "monitoring:alert_ack", alert_ack, obj="alert"),
    Rule("POST", "monitoring:kill_switch", operate, obj="family"),
    Rule("POST", "monitoring:rollback", operate, obj="family"),
    Rule("POST", "monitoring:canary", operate, obj="family"),
]

# Known gaps, asserted as such so that a fix shows up: (rule route, caller, obj) -> reason.
# Empty since GET routing of a never-configured family stopped answering 500 (fuzzing found it).
XFAIL: dict[tuple[str, str, str, str], str] = {}


# --- Discovery -----------------------------------------------------------------------------------

EXCLUDED_PREFIXES = ("admin/", "api/v1/", "static/", "media/")


def discover_pages() -> dict[str, str]:
    """Every URL pattern as {qualified name: route}, except the admin, the API (discovered from
    its schema) and static files."""
    found: dict[str, str] = {}

    def walk(patterns: list[Any], prefix: str, namespace: str) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                if route.startswith(EXCLUDED_PREFIXES):
                    continue
                ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
                walk(p.url_patterns, route, ns)
            elif isinstance(p, URLPattern):
                assert p.name, f"unnamed URL pattern {route!r}: name it so the matrix can rule"
                found[namespace + p.name] = route

    walk(get_resolver().url_patterns, "", "")
    return found


def discover_api() -> set[tuple[str, str]]:
    from gatehouse.api import api

    schema = api.get_openapi_schema()
    return {(m.upper(), path) for path, ops in schema["paths"].items() for m in ops}


def test_every_endpoint_has_a_rule() -> None:
    pages, operations = discover_pages(), discover_api()
    page_rules = {r.route for r in PAGE_RULES}
    api_rules = {(r.method, r.route) for r in API_RULES}
    assert not set(pages) - page_rules, f"pages without a rule: {sorted(set(pages) - page_rules)}"
    assert not operations - api_rules, f"API operations without a rule: {operations - api_rules}"
    assert not page_rules - set(pages), f"rules for unknown pages: {page_rules - set(pages)}"
    assert not api_rules - operations, f"rules for unknown operations: {api_rules - operations}"
    assert len(operations) >= 40, operations
    assert len(pages) >= 40, pages


# --- The world -----------------------------------------------------------------------------------


@dataclass
class World:
    users: dict[str, Any] = field(default_factory=dict)
    raw_keys: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, int] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)

    def params(self, kind: str | None, obj: str, caller: str) -> dict[str, str]:
        params = dict(self.fixed)
        if kind is not None:
            params.update(self.objects.get((kind, obj, caller)) or self.objects[(kind, obj, "*")])
        return params

    def client(self, caller: str, fresh: bool = False) -> Client:
        if fresh and caller in self.users:
            return self._login(caller)
        return self.clients.get(caller) or Client()

    def _login(self, caller: str) -> Client:
        user = self.users[caller]
        if caller in VERIFIED:
            return self.verified(user)
        client = Client()
        client.force_login(user)
        return client

    verified: Callable[[Any], Client] = field(default=lambda u: Client())


def _family(slug: str, owner: Any) -> Any:
    return registry_services.family_create(
        data=FamilyIn(
            slug=slug,
            name=slug,
            purposes=["credit scoring"],
            legal_basis="consent",
            consent_purpose="credit_scoring",
            risk_class="high",
            retention_days=365,
        ),
        owner=owner,
    )


@pytest.fixture
def world(make_user, verified_client, grant_consent, settings, tmp_path) -> Any:
    from apps.compliance import bias, erasure
    from apps.compliance import services as compliance_services
    from apps.inference import batch
    from apps.inference import services as inference_services
    from apps.inference.backends import reset_backends
    from gatehouse.services import alert_raise_once

    settings.ARTIFACT_STORE_DIR = tmp_path / "artifacts"
    reset_backends()
    w = World(verified=verified_client)
    roles = {
        "business_user": Role.BUSINESS_USER,
        "api_consumer": Role.API_CONSUMER,
        "model_owner": Role.MODEL_OWNER,
        "approver": Role.APPROVER,
        "compliance_officer": Role.COMPLIANCE_OFFICER,
        "admin": Role.ADMIN,
        "admin_role": Role.ADMIN,
    }
    for name, role in roles.items():  # model_owner_2fa is model_owner's user, added below
        extra = {"is_staff": True, "is_superuser": name == "admin"} if role is Role.ADMIN else {}
        w.users[name] = make_user(role, username=f"m-{name}", **extra)
    owner_b = make_user(Role.MODEL_OWNER, username="m-owner-b")
    approver_b = make_user(Role.APPROVER, username="m-approver-b")
    officer_2 = make_user(Role.COMPLIANCE_OFFICER, username="m-officer-2")
    outsider = make_user(Role.API_CONSUMER, username="m-outsider")

    fam_a = _family(FAM_A, w.users["model_owner"])
    fam_b = _family(FAM_B, owner_b)
    perms = {"view": FamilyAction.VIEW, "predict": FamilyAction.PREDICT}
    perms |= {"manage": FamilyAction.MANAGE, "approve": FamilyAction.APPROVE}
    for name, held in GRANTS.items():
        if held and name != "model_owner":
            registry_services.family_grant(
                family=fam_a, to=w.users[name], actions=[perms[p] for p in sorted(held)]
            )
    registry_services.family_grant(
        family=fam_b, to=approver_b, actions=[FamilyAction.VIEW, FamilyAction.APPROVE]
    )
    registry_services.family_grant(
        family=fam_b, to=outsider, actions=[FamilyAction.VIEW, FamilyAction.PREDICT]
    )
    serve(fam_a, w.users["model_owner"], w.users["approver"], "1.0.0")
    pending = register(fam_a, w.users["model_owner"], Registration(version="2.0.0"))
    registry_services.version_validate(version=pending, user=w.users["model_owner"])
    serve(fam_b, owner_b, approver_b, "1.0.0")
    grant_consent(*(f"applicant-{i}" for i in range(1, 12)))

    w.users["model_owner_2fa"] = w.users["model_owner"]
    for name in SESSION_CALLERS:
        w.clients[name] = w._login(name)
    for name, (owner, actions) in KEYS.items():
        created = gatehouse_services.apikey_create(user=w.users[owner], name=name, actions=actions)
        w.raw_keys[name] = created.raw
        w.key_ids[name] = created.key.pk

    def decide(user: Any, key: Any, family: Any) -> str:
        request = inference_services.PredictRequest(
            rows=[ROW],
            subject="applicant-1",
            purpose="",
            jurisdiction="",
            idempotency_key="",
            request_id="",
        )
        _, body = inference_services.predict(family=family, user=user, key=key, request=request)
        return body["predictions"][0]["decision_id"]

    def job(user: Any, key: Any, family: Any) -> str:
        created = batch.batch_submit(
            family=family,
            user=user,
            key=key,
            file=io.BytesIO(CSV),
            filename="m.csv",
            purpose="credit_scoring",
            subject_column="applicant",
        )
        return str(created.pk)

    from gatehouse.models import ApiKey

    # Own objects per caller; foreign ones are the outsider's / the foreign family's.
    for caller in (*SESSION_CALLERS, *KEYS):
        if caller in SAME_USER:
            for kind in ("decision", "batch", "key"):
                w.objects[(kind, "own", caller)] = w.objects[(kind, "own", SAME_USER[caller])]
            continue
        key = ApiKey.objects.get(pk=w.key_ids[caller]) if caller in KEYS else None
        user = w.users[_user_of(caller)]
        w.objects[("decision", "own", caller)] = {"decision_id": decide(user, key, fam_a)}
        # A key without 'predict' is refused before the lookup: it reuses its owner's job
        # (the cap of 3 queued jobs per user would refuse the cells' own submissions).
        if key is None or "predict" in key.actions:
            w.objects[("batch", "own", caller)] = {"job_id": job(user, key, fam_a)}
        else:
            w.objects[("batch", "own", caller)] = w.objects[("batch", "own", _user_of(caller))]
        if caller in KEYS:
            w.objects[("key", "own", caller)] = {"key_id": str(w.key_ids[caller])}
        else:
            spare = gatehouse_services.apikey_create(user=user, name="spare", actions=["view"])
            w.objects[("key", "own", caller)] = {"key_id": str(spare.key.pk)}
    for kind in ("decision", "batch", "key"):  # anonymous callers use the business user's
        w.objects[(kind, "own", "*")] = w.objects[(kind, "own", "business_user")]
    foreign_decision = decide(outsider, None, fam_b)
    w.objects[("decision", "foreign", "*")] = {"decision_id": foreign_decision}
    w.objects[("batch", "foreign", "*")] = {"job_id": job(outsider, None, fam_b)}
    foreign_key = gatehouse_services.apikey_create(user=outsider, name="x", actions=["view"])
    w.objects[("key", "foreign", "*")] = {"key_id": str(foreign_key.key.pk)}
    for obj, slug, number in (("own", FAM_A, "2.0.0"), ("foreign", FAM_B, "1.0.0")):
        w.objects[("family", obj, "*")] = {"slug": slug, "family": slug}
        w.objects[("version", obj, "*")] = {"slug": slug, "version": number}

    from apps.inference.models import Decision

    own_review = compliance_services.review_request(
        decision=Decision.objects.get(
            pk=w.objects[("decision", "own", "business_user")]["decision_id"]
        ),
        user=w.users["compliance_officer"],
        key=None,
        reason="m",
        by_subject=False,
    )
    foreign_review = compliance_services.review_request(
        decision=Decision.objects.get(pk=foreign_decision),
        user=officer_2,
        key=None,
        reason="m",
        by_subject=False,
    )
    w.objects[("review", "own", "*")] = {"review_id": str(own_review.pk)}
    w.objects[("review", "foreign", "*")] = {"review_id": str(foreign_review.pk)}

    officer = w.users["compliance_officer"]
    mine = erasure.erasure_create(reference="applicant-2", user=officer)
    by_key = erasure.erasure_create(
        reference="applicant-3",
        user=w.users["api_consumer"],
        key=ApiKey.objects.get(pk=w.key_ids["key:subjects"]),
    )
    theirs = erasure.erasure_create(reference="applicant-4", user=officer_2)
    w.objects[("erasure", "own", "*")] = {"request_id": str(mine.pk)}
    for caller in ("key:subjects", "key:predict", "key:view"):
        w.objects[("erasure", "own", caller)] = {"request_id": str(by_key.pk)}
    w.objects[("erasure", "foreign", "*")] = {"request_id": str(theirs.pk)}

    from tests.decision_log import integrate

    integrate()  # a checkpoint to publish, receipts with proofs

    version_a = fam_a.versions.get(version="1.0.0")
    report = bias.report_create(
        version=version_a, source="validation", user=officer, start=None, end=None
    )
    for obj, family in (("own", FAM_A), ("foreign", FAM_B)):
        alert = alert_raise_once(
            kind="matrix",
            severity="warning",
            title=f"{family}: matrix",
            subject=f"family:{family}",
            family=family,
        )
        assert alert is not None
        w.objects[("alert", obj, "*")] = {"alert_id": str(alert.pk)}
    w.markers = {"family": FAM_B, "decision": foreign_decision}
    w.fixed = {"reference": "applicant-1", "report_id": str(report.pk)}
    yield w
    reset_backends()


# --- Running the cells ---------------------------------------------------------------------------

_PARAM = re.compile(r"\{(\w+)\}|<(?:\w+:)?(\w+)>")


def _fill(route: str, params: dict[str, str]) -> str:
    return "/" + _PARAM.sub(lambda m: params[m.group(1) or m.group(2)], route).lstrip("/")


def _classify(response: Any, api: bool) -> str:
    status = response.status_code
    if status in (401, 403, 404):
        return {401: UNAUTH if api else "401", 403: DENY, 404: HIDE}[status]
    if status == 302 and "/account/login/" in response.get("Location", ""):
        return UNAUTH
    if status < 400 or status in (409, 422):
        return OK
    return str(status)


def _request(world: World, rule: Rule, caller: str, obj: str, api: bool, route: str) -> Any:
    path = _fill(route, world.params(rule.obj, obj, caller)) + rule.query
    client = world.client(caller if caller not in KEYS or not api else "anon", rule.fresh_client)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {world.raw_keys[caller]}"} if caller in KEYS else {}
    method = rule.method.lower()
    if rule.files is not None:
        data = {k: (io.BytesIO(v) if isinstance(v, bytes) else v) for k, v in rule.files.items()}
        for k, v in data.items():
            if isinstance(v, io.BytesIO):
                v.name = f"{k}.csv"
        if api and "artifact" not in data and "metadata" in data:
            data |= {"artifact": _named(b"x", "m.pt"), "validation": _named(b"a\n", "v.csv")}
        return getattr(client, method)(path, data, **headers)
    if api and method in ("post", "put"):
        body = rule.body(world) if callable(rule.body) else (rule.body or {})
        return getattr(client, method)(
            path, json.dumps(body), content_type="application/json", **headers
        )
    return getattr(client, method)(path, **headers)


def _named(data: bytes, name: str) -> io.BytesIO:
    buffer = io.BytesIO(data)
    buffer.name = name
    return buffer


def test_access_matrix(world: World) -> None:
    pages = discover_pages()
    cells, failures, leaks, xfails, fixed = 0, [], 0, [], []
    plan = [(r, API_CALLERS, True, r.route) for r in API_RULES]
    plan += [(r, PAGE_CALLERS, False, pages[r.route]) for r in PAGE_RULES]
    for rule, callers, api, route in plan:
        for obj in rule.objs:
            for caller in callers:
                if caller == "anon" or (caller in KEYS and not api):
                    expected = OK if rule.public and rule.rule is everyone else UNAUTH
                    if rule.public and rule.rule is not everyone:
                        expected = rule.rule(caller, obj)
                else:
                    expected = rule.rule(caller, obj)
                with transaction.atomic():
                    response = _request(world, rule, caller, obj, api, route)
                    transaction.set_rollback(True)
                got = _classify(response, api)
                if isinstance(expected, int):
                    got = str(response.status_code)
                marker = world.markers.get(rule.foreign_marker or "")
                if (
                    got == OK
                    and marker
                    and _user_of(caller) not in rule.sees_foreign
                    and marker.encode() in response.content
                ):
                    got = f"ok, listing a foreign object ({marker})"
                cells += 1
                where = f"{rule.method} {route} [{obj}] as {caller}"
                reason = XFAIL.get((rule.method, rule.route, caller, obj))
                if got == str(expected):
                    if reason:  # not strict: a fix may land before this table is edited
                        fixed.append(f"{where}: passes now, remove it from XFAIL ({reason})")
                    continue
                if reason:
                    xfails.append(f"{where}: {reason}")
                    continue
                leak = got == OK or (expected == HIDE and got == DENY)
                leaks += leak
                detail = response.content[:160].decode(errors="replace").replace("\n", " ")
                failures.append(
                    f"{'LEAK ' if leak else ''}{where}: expected {expected}, "
                    f"got {response.status_code} ({detail})"
                )
    print(f"\naccess matrix: {cells} cells checked, {leaks} leaks, {len(xfails)} known gaps")
    for line in xfails:
        print(f"  known gap: {line}")
    for line in fixed:
        print(f"  fixed gap: {line}")
    assert not failures, f"{len(failures)} cells differ:\n" + "\n".join(failures)
    assert cells >= MIN_CELLS, f"only {cells} cells: did the endpoint discovery collapse?"


def test_admin_needs_staff_and_a_verified_second_factor(make_user, verified_client) -> None:
    staff = make_user(Role.ADMIN, username="m-staff", is_staff=True, is_superuser=True)
    plain = Client()
    plain.force_login(staff)
    assert plain.get("/admin/").status_code == 302  # not verified: to the admin login
    assert verified_client(staff).get("/admin/").status_code == 200
    officer = make_user(Role.COMPLIANCE_OFFICER, username="m-not-staff")
    assert verified_client(officer).get("/admin/").status_code == 302  # not staff
    assert Client().get("/admin/").status_code == 302
