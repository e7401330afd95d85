from django.urls import path

from apps.monitoring import views

urlpatterns = [path("", views.prometheus, name="prometheus_metrics")]
