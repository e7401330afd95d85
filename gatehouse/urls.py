"""Root URL configuration. Apps are included by module path; the platform imports none of them."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django_otp.admin import OTPAdminSite

from gatehouse import views
from gatehouse.api import api

# The Django admin needs a verified second factor (ASVS 6.3.2).
admin.site.__class__ = OTPAdminSite

handler500 = "gatehouse.views.server_error"

urlpatterns = [
    path("", views.home, name="home"),
    path("health", views.health, name="health"),
    path("account/login/", views.LoginView.as_view(), name="login"),
    path("account/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/2fa/", views.otp_setup, name="otp_setup"),
    path("account/2fa/verify/", views.otp_verify, name="otp_verify"),
    path("account/api-keys/", views.api_keys, name="api_keys"),
    path("account/api-keys/<int:key_id>/revoke/", views.api_key_revoke, name="api_key_revoke"),
    path("account/notifications/read/", views.notifications_read, name="notifications_read"),
    path("audit/", views.audit_log, name="audit_log"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("registry/", include("apps.registry.urls")),
    path("predict/", include("apps.inference.urls")),
    path("serving/", include("apps.inference.serving_urls")),
    path("compliance/", include("apps.compliance.urls")),
    path("monitoring/", include("apps.monitoring.urls")),
    path("metrics", include("apps.monitoring.metrics_urls")),
]
