"""Test URL conf: the project's URLs, with the alert pages added to the ``monitoring``
namespace (until ``apps.monitoring.urls`` routes them itself)."""

from django.urls import URLResolver, include, path

from apps.monitoring import alert_views
from apps.monitoring import urls as monitoring_urls
from gatehouse.urls import handler500
from gatehouse.urls import urlpatterns as project_urlpatterns

alert_patterns = [
    path("alerts/", alert_views.alert_list, name="alerts"),
    path("alerts/<int:alert_id>/ack/", alert_views.alert_acknowledge, name="alert_ack"),
]

urlpatterns = [
    path("monitoring/", include(([*alert_patterns, *monitoring_urls.urlpatterns], "monitoring"))),
    *(
        p
        for p in project_urlpatterns
        if not (isinstance(p, URLResolver) and p.namespace == "monitoring")
    ),
]

__all__ = ["handler500", "urlpatterns"]
