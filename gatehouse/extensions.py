"""Extension points through which apps plug into the platform without the platform importing them.

Apps register in their ``AppConfig.ready()``; the platform only calls what was registered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatehouse.roles import Role

if TYPE_CHECKING:
    from gatehouse.models import Alert

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    roles: frozenset[Role]
    order: int = 100
    description: str = ""


@dataclass(frozen=True)
class LiveTopic:
    """A live view a page subscribes to: when the topic is published, every subscribed socket
    gets ``render(user)`` (HTML rendered for that user only, or "" to send nothing)."""

    name: str
    render: Callable[[Any], str]
    roles: frozenset[Role]


@dataclass
class _Registry:
    nav: list[NavItem] = field(default_factory=list)
    # Returns (slug, label) of the model families a user may use with an API key.
    family_choices: Callable[[Any], Sequence[tuple[str, str]]] | None = None
    # Demo-data steps run by ``manage.py seed_demo`` after users exist, given {role: user}.
    demo_steps: list[Callable[[dict[Role, Any]], None]] = field(default_factory=list)
    # Called with each new alert once the transaction that stored it has committed.
    alert_listeners: list[Callable[[Alert], None]] = field(default_factory=list)
    # Live topics a page may subscribe to over the websocket: name -> LiveTopic.
    live_topics: dict[str, LiveTopic] = field(default_factory=dict)
    # Components reported by GET /health besides the database, cache and broker: name -> check.
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)


registry = _Registry()


def register_nav(item: NavItem) -> None:
    if item not in registry.nav:
        registry.nav.append(item)
        registry.nav.sort(key=lambda i: (i.order, i.label))


def register_family_choices(provider: Callable[[Any], Sequence[tuple[str, str]]]) -> None:
    registry.family_choices = provider


def family_choices_for(user: Any) -> list[tuple[str, str]]:
    provider = registry.family_choices
    return list(provider(user)) if provider else []


def register_demo_step(step: Callable[[dict[Role, Any]], None]) -> None:
    if step not in registry.demo_steps:
        registry.demo_steps.append(step)


def nav_for(user: Any, roles: frozenset[Role]) -> list[NavItem]:
    return [item for item in registry.nav if not item.roles or item.roles & roles]


def register_live_topic(topic: LiveTopic) -> None:
    registry.live_topics[topic.name] = topic


def live_topic(name: str) -> LiveTopic | None:
    return registry.live_topics.get(name)


def register_alert_listener(listener: Callable[[Alert], None]) -> None:
    if listener not in registry.alert_listeners:
        registry.alert_listeners.append(listener)


def unregister_alert_listener(listener: Callable[[Alert], None]) -> None:
    if listener in registry.alert_listeners:
        registry.alert_listeners.remove(listener)


def alert_raised(alert: Alert) -> None:
    """Call every alert listener; one that fails is logged and does not stop the others (the
    alert itself is stored already)."""
    for listener in list(registry.alert_listeners):
        try:
            listener(alert)
        except Exception:
            logger.exception("alert listener %r failed for alert %s", listener, alert.pk)


@dataclass(frozen=True)
class HealthCheck:
    """A component that ``GET /health`` reports: ``check()`` returns "ok", "degraded" or "down"
    (an exception counts as "down"). Only a ``required`` component that is not "ok" or
    "degraded" makes the endpoint answer 503."""

    name: str
    check: Callable[[], str]
    required: bool = False


def register_health_check(check: HealthCheck) -> None:
    registry.health_checks[check.name] = check


def health_checks() -> list[HealthCheck]:
    return list(registry.health_checks.values())
