from django.urls import path

from apps.registry import views

app_name = "registry"

VERSION = "families/<slug:slug>/versions/<str:version>/"

urlpatterns = [
    path("families/", views.family_list, name="family_list"),
    path("families/<slug:slug>/", views.family_detail, name="family_detail"),
    path("families/<slug:slug>/register/", views.version_register, name="version_register"),
    path(VERSION, views.version_detail, name="version_detail"),
    path(f"{VERSION}validate/", views.version_validate, name="version_validate"),
    path(f"{VERSION}approve/", views.version_approve, name="version_approve"),
    path(f"{VERSION}reject/", views.version_reject, name="version_reject"),
    path(f"{VERSION}deploy/", views.version_deploy, name="version_deploy"),
    path(f"{VERSION}retire/", views.version_retire, name="version_retire"),
    path("approvals/", views.approval_queue, name="approval_queue"),
]
