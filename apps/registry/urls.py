from django.urls import path

from apps.registry import views

app_name = "registry"

urlpatterns = [
    path("families/", views.family_list, name="family_list"),
]
