"""URLs of the serving (routing) pages, mounted at /serving/."""

from django.urls import path

from apps.inference import routing_views

app_name = "serving"

urlpatterns = [
    path("", routing_views.serving_list, name="serving_list"),
    path("<slug:slug>/", routing_views.routing_page, name="routing"),
]
