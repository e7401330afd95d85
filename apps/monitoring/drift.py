"""Drift of live inputs: a reference distribution per model input taken from a version's
validation data, compared with the most recent recorded inputs by PSI and a two-sample KS test."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery
from numpy.typing import ArrayLike
from scipy import stats

from apps.inference.models import Decision, Route
from apps.monitoring.models import DriftReference, DriftSnapshot, DriftStatus, MonitoringPolicy
from apps.registry.artifacts import default_store
from apps.registry.evaluation import parse_validation_csv
from apps.registry.models import ModelFamily, ModelVersion, VersionStatus
from apps.registry.signature import Feature, FeatureType, Signature
from gatehouse.services import alert_raise

logger = logging.getLogger(__name__)

NUMERIC = "numeric"
CATEGORICAL = "categorical"
# Empty bins would make PSI infinite: each share is taken as at least this.
PSI_EPSILON = 1e-4
SAMPLE_SIZE = 2000
DECILES = tuple(q / 10 for q in range(1, 10))
# Worst last; "insufficient" is not a degree of drift and is handled apart.
_SEVERITY = {DriftStatus.OK: 0, DriftStatus.WARNING: 1, DriftStatus.DRIFT: 2}


class NoReferenceData(Exception):
    """The version has no validation data to take a reference distribution from."""


def policy_for(family: ModelFamily) -> MonitoringPolicy:
    """The family's monitoring thresholds; an unsaved instance with the field defaults when the
    family has no row of its own."""
    return MonitoringPolicy.objects.filter(family=family).first() or MonitoringPolicy(family=family)


# --- Reference -------------------------------------------------------------------------------


def monitored_features(signature: Signature) -> list[Feature]:
    """The features whose drift is watched: model inputs that are not personal identifiers
    (``pii`` inputs are recorded pseudonymised, so their live values are not comparable)."""
    return [f for f in signature.features if f.model_input and not f.pii]


def _is_numeric(feature: Feature) -> bool:
    return feature.type in (FeatureType.FLOAT, FeatureType.INT)


def _numbers(values: Iterable[Any]) -> np.ndarray:
    """The finite numbers among ``values`` (missing and malformed values are left out)."""
    kept = [
        float(v)
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    return np.asarray(kept, dtype=float)


def _category(value: Any) -> str | None:
    """A categorical value as the string key it is counted under (bools as true/false)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _categories(feature: Feature) -> list[str]:
    if feature.type is FeatureType.BOOL:
        return ["false", "true"]
    return list(feature.allowed or [])


def decile_edges(values: np.ndarray) -> list[float]:
    """The distinct decile cut points of ``values``: the inner edges of at most ten bins.

    Bins are ``(-inf, e1], (e1, e2], ..., (ek, +inf)``, so live values below or above every
    reference value still fall into the first or last bin. Ties (integer features, spikes) merge
    deciles and leave fewer bins. A constant feature ``c`` gets the edges ``[c-, c]``: one bin
    below it, one holding it, one above it, so a move either way is seen.
    """
    edges = sorted({float(q) for q in np.quantile(values, DECILES)})
    if len(edges) == 1:
        edges.insert(0, float(np.nextafter(edges[0], -np.inf)))
    return edges


def bin_shares(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Share of ``values`` in each bin of ``edges`` (``len(edges) + 1`` bins, see
    ``decile_edges``); all zeros when there are no values."""
    counts = np.bincount(
        np.searchsorted(np.asarray(edges, dtype=float), values, side="left"),
        minlength=len(edges) + 1,
    ).astype(float)
    return counts / counts.sum() if counts.sum() else counts


def _sample(values: np.ndarray) -> list[float]:
    """Sorted values, thinned to ``SAMPLE_SIZE`` evenly spaced order statistics if there are
    more (deterministic, and it keeps the empirical distribution function the KS test uses)."""
    ordered = np.sort(values)
    if len(ordered) > SAMPLE_SIZE:
        ordered = ordered[np.linspace(0, len(ordered) - 1, SAMPLE_SIZE).round().astype(int)]
    return [float(v) for v in ordered]


def reference_features(signature: Signature, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The reference distribution of each monitored feature of ``rows`` (see ``DriftReference``).

    Numeric: ``{"kind": "numeric", "edges", "proportions", "sample"}``; bool and category:
    ``{"kind": "categorical", "proportions": {value: share}}`` with every allowed value present
    (0 when the data has none of it).
    """
    features: dict[str, Any] = {}
    for feature in monitored_features(signature):
        column = [row.get(feature.name) for row in rows]
        if _is_numeric(feature):
            values = _numbers(column)
            if not len(values):
                continue
            edges = decile_edges(values)
            features[feature.name] = {
                "kind": NUMERIC,
                "edges": edges,
                "proportions": [float(p) for p in bin_shares(values, edges)],
                "sample": _sample(values),
            }
        else:
            counts = Counter(c for c in map(_category, column) if c is not None)
            total = sum(counts.values())
            if not total:
                continue
            features[feature.name] = {
                "kind": CATEGORICAL,
                "proportions": {v: counts.get(v, 0) / total for v in _categories(feature)},
            }
    return features


def build_reference(version: ModelVersion) -> DriftReference:
    """Take (or take again) the reference distribution of ``version`` from its validation CSV.

    Raises ``NoReferenceData`` when the version has no validation file, and the artifact
    store's errors when the file is missing or altered.
    """
    if not version.validation_sha256:
        raise NoReferenceData(f"{version} has no validation data.")
    signature = Signature.model_validate(version.signature)
    rows, _labels = parse_validation_csv(
        signature, default_store().read_verified(version.validation_sha256)
    )
    reference, _created = DriftReference.objects.update_or_create(
        version=version,
        defaults={"rows": len(rows), "features": reference_features(signature, rows)},
    )
    return reference


def reference_for(version: ModelVersion) -> DriftReference:
    """The reference of ``version``, built now if it has none yet (versions registered before
    references were taken at registration, or whose build failed then)."""
    reference = DriftReference.objects.filter(version=version).first()
    return reference if reference is not None else build_reference(version)


# --- Comparison ------------------------------------------------------------------------------


def psi(expected: ArrayLike, actual: ArrayLike) -> float:
    """Population stability index of ``actual`` shares against ``expected`` shares:

    ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)``, with ``a_i = max(actual_i, eps)`` and
    ``e_i = max(expected_i, eps)``, ``eps = PSI_EPSILON``, so that an empty bin counts as a
    large but finite difference. 0 means the same distribution; by convention below 0.1 is
    stable, 0.1-0.25 a moderate shift, above 0.25 a major one.
    """
    e = np.maximum(np.asarray(expected, dtype=float), PSI_EPSILON)
    a = np.maximum(np.asarray(actual, dtype=float), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _sig(value: float) -> float:
    """A float rounded to six significant digits (for the stored snapshot)."""
    return float(f"{value:.6g}")


def _judge(
    policy: MonitoringPolicy, psi_value: float, ks_p: float | None, ks_alpha: float | None = None
) -> DriftStatus:
    alpha = policy.ks_p_alert if ks_alpha is None else ks_alpha
    if psi_value >= policy.psi_alert or (ks_p is not None and ks_p < alpha):
        return DriftStatus.DRIFT
    if psi_value >= policy.psi_warning:
        return DriftStatus.WARNING
    return DriftStatus.OK


def _compare_numeric(
    spec: Mapping[str, Any], column: list[Any], policy: MonitoringPolicy, ks_alpha: float
) -> dict[str, Any]:
    values = _numbers(column)
    out: dict[str, Any] = {"kind": NUMERIC, "rows": len(values)}
    if len(values) < policy.drift_min_rows:
        return {**out, "status": DriftStatus.INSUFFICIENT.value}
    live = bin_shares(values, spec["edges"])
    psi_value = psi(spec["proportions"], live)
    ks_p: float | None = None
    if len(spec["sample"]) >= 2:
        result = stats.ks_2samp(values, np.asarray(spec["sample"], dtype=float))
        ks_p = float(result.pvalue)
        out["ks_statistic"] = _sig(float(result.statistic))
        out["ks_p"] = _sig(ks_p)
    return {
        **out,
        "psi": _sig(psi_value),
        "live": [_sig(float(p)) for p in live],
        "status": _judge(policy, psi_value, ks_p, ks_alpha).value,
    }


def _compare_categorical(
    spec: Mapping[str, Any], column: list[Any], policy: MonitoringPolicy
) -> dict[str, Any]:
    counts = Counter(c for c in map(_category, column) if c is not None)
    total = sum(counts.values())
    out: dict[str, Any] = {"kind": CATEGORICAL, "rows": total}
    if total < policy.drift_min_rows:
        return {**out, "status": DriftStatus.INSUFFICIENT.value}
    expected: dict[str, float] = spec["proportions"]
    # A live value the reference never allowed still counts (expected share 0).
    keys = [*expected, *sorted(set(counts) - set(expected))]
    live = {key: counts.get(key, 0) / total for key in keys}
    psi_value = psi([expected.get(k, 0.0) for k in keys], [live[k] for k in keys])
    return {
        **out,
        "psi": _sig(psi_value),
        "live": {k: _sig(v) for k, v in live.items()},
        "status": _judge(policy, psi_value, None).value,
    }


def compare(
    reference: DriftReference, live_rows: Sequence[Mapping[str, Any]], policy: MonitoringPolicy
) -> tuple[DriftStatus, dict[str, dict[str, Any]]]:
    """Overall status and, per monitored feature, the comparison of ``live_rows`` with the
    reference.

    Numeric features: PSI over the reference's decile bins (live values binned by the same
    edges, first and last bins open-ended) and the two-sample Kolmogorov-Smirnov test
    (``scipy.stats.ks_2samp``, two-sided: ``D = sup_x |F_live(x) - F_ref(x)|`` with its
    p-value) against the reference sample. Bool and category features: PSI over the values.
    A feature is ``drift`` when ``PSI >= psi_alert`` or ``KS p < ks_p_alert / n`` (Bonferroni
    over the ``n`` numeric features), ``warning`` when
    ``PSI >= psi_warning``, else ``ok``; ``insufficient`` when it has fewer than
    ``drift_min_rows`` live values. Overall: the worst feature status, or ``insufficient`` when
    there are fewer than ``drift_min_rows`` live rows (or no feature could be judged).
    """
    features: dict[str, dict[str, Any]] = {}
    # Bonferroni: with many numeric features (64 pixels) a per-feature 1 % test would flag some
    # feature on almost every check; the family-wise false-alarm rate stays at ks_p_alert.
    n_numeric = sum(1 for spec in reference.features.values() if spec["kind"] == NUMERIC)
    ks_alpha = policy.ks_p_alert / max(1, n_numeric)
    for name, spec in reference.features.items():
        column = [row.get(name) for row in live_rows]
        if spec["kind"] == NUMERIC:
            features[name] = _compare_numeric(spec, column, policy, ks_alpha)
        else:
            features[name] = _compare_categorical(spec, column, policy)
    judged = [
        DriftStatus(f["status"])
        for f in features.values()
        if f["status"] != DriftStatus.INSUFFICIENT
    ]
    if len(live_rows) < policy.drift_min_rows or not judged:
        return DriftStatus.INSUFFICIENT, features
    return max(judged, key=_SEVERITY.__getitem__), features


# --- Checks ----------------------------------------------------------------------------------


def live_inputs(version: ModelVersion, window: int) -> list[dict[str, Any]]:
    """The recorded inputs of the last ``window`` decisions served by ``version``.

    Shadow decisions (never served) and erased ones (inputs removed) are left out.
    """
    inputs = (
        Decision.objects.filter(version=version, erased_at__isnull=True, inputs__isnull=False)
        .exclude(route=Route.SHADOW)
        .order_by("-created_at")
        .values_list("inputs", flat=True)[:window]
    )
    return [row for row in inputs if isinstance(row, dict)]


def _last_judged(version: ModelVersion) -> DriftSnapshot | None:
    return (
        DriftSnapshot.objects.filter(version=version)
        .exclude(status=DriftStatus.INSUFFICIENT)
        .order_by("-computed_at", "-pk")
        .first()
    )


def check_version(version: ModelVersion) -> DriftSnapshot:
    """Compare the recent live inputs of ``version`` with its reference and store the result.

    Raises one ``drift`` alert when the status turns to drift: not again while the drift lasts,
    i.e. while the last judged snapshot (``insufficient`` ones are skipped) is already drift.
    """
    policy = policy_for(version.family)
    reference = reference_for(version)
    rows = live_inputs(version, policy.drift_window)
    status, features = compare(reference, rows, policy)
    with transaction.atomic():
        previous = _last_judged(version)
        snapshot = DriftSnapshot.objects.create(
            family=version.family,
            version=version,
            rows=len(rows),
            status=status,
            features=features,
        )
        if status == DriftStatus.DRIFT and (
            previous is None or previous.status != DriftStatus.DRIFT
        ):
            _raise_alert(version, features)
    return snapshot


def _raise_alert(version: ModelVersion, features: Mapping[str, Mapping[str, Any]]) -> None:
    drifted = sorted(name for name, f in features.items() if f["status"] == DriftStatus.DRIFT)
    lines = []
    for name in drifted:
        feature = features[name]
        ks = f", KS p={feature['ks_p']:.3g}" if "ks_p" in feature else ""
        lines.append(f"{name}: PSI={feature['psi']:.3f}{ks} over {feature['rows']} live rows")
    alert_raise(
        kind="drift",
        severity="warning",
        title=f"Input drift in {version}: {', '.join(drifted)}"[:200],
        detail="\n".join(lines),
        subject=str(version),
        family=version.family.slug,
    )


def monitored_versions() -> list[ModelVersion]:
    """The versions whose inputs are watched: in production, in staging, or a family's canary."""
    return list(
        ModelVersion.objects.filter(
            Q(status__in=[VersionStatus.PRODUCTION, VersionStatus.STAGING])
            | Q(family__routing__canary_version=F("pk"))
        )
        .select_related("family")
        .distinct()
        .order_by("family__slug", "pk")
    )


def check_all() -> list[DriftSnapshot]:
    """Check every monitored version; one that cannot be checked (e.g. its validation file is
    missing) is logged and skipped, and does not stop the others."""
    snapshots: list[DriftSnapshot] = []
    for version in monitored_versions():
        try:
            snapshots.append(check_version(version))
        except Exception:
            logger.exception("drift check of %s failed", version)
    return snapshots


# --- Selectors (the caller passes the families it may view) ----------------------------------


def latest_version_snapshots(families: Iterable[ModelFamily]) -> dict[int, DriftSnapshot]:
    """The latest snapshot of each version of ``families`` that has one, by version id
    (two queries)."""
    family_ids = [f.pk for f in families]
    latest = (
        DriftSnapshot.objects.filter(version_id=OuterRef("pk"))
        .order_by("-computed_at", "-pk")
        .values("pk")[:1]
    )
    ids = (
        ModelVersion.objects.filter(family_id__in=family_ids)
        .annotate(latest=Subquery(latest))
        .filter(latest__isnull=False)
        .values_list("latest", flat=True)
    )
    snapshots = DriftSnapshot.objects.filter(pk__in=list(ids)).select_related("version")
    return {s.version_id: s for s in snapshots}


def latest_snapshots(families: Iterable[ModelFamily]) -> dict[int, DriftSnapshot]:
    """One snapshot per family, by family id: the latest of its production version, or, when
    that has none (or the family has no production version), the latest of any version."""
    by_version = latest_version_snapshots(families)
    out: dict[int, DriftSnapshot] = {}
    for snapshot in sorted(by_version.values(), key=lambda s: (s.computed_at, s.pk)):
        current = out.get(snapshot.family_id)
        in_production = snapshot.version.status == VersionStatus.PRODUCTION
        if current is None or in_production or current.version.status != VersionStatus.PRODUCTION:
            out[snapshot.family_id] = snapshot
    return out


def history(version: ModelVersion, limit: int = 50) -> list[DriftSnapshot]:
    """The latest ``limit`` snapshots of ``version``, newest first."""
    return list(
        DriftSnapshot.objects.filter(version=version).order_by("-computed_at", "-pk")[:limit]
    )
