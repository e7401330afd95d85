from django.urls import path

from apps.monitoring import alert_views, views

app_name = "monitoring"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("alerts/", alert_views.alert_list, name="alerts"),
    path("alerts/<int:alert_id>/ack/", alert_views.alert_acknowledge, name="alert_ack"),
    path("families/<slug:slug>/kill-switch/", views.kill_switch, name="kill_switch"),
    path("families/<slug:slug>/rollback/", views.rollback, name="rollback"),
    path("families/<slug:slug>/canary/", views.canary, name="canary"),
]
