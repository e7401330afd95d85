from django.urls import path

from apps.inference import views

app_name = "inference"

urlpatterns = [
    path("", views.predict_home, name="predict_home"),
    path(
        "decisions/<uuid:decision_id>/receipt.json",
        views.decision_receipt,
        name="decision_receipt",
    ),
    path("log/public-key.txt", views.log_public_key, name="log_public_key"),
    path("<slug:slug>/", views.predict_form, name="predict_form"),
]

urlpatterns += [
    path("<slug:slug>/batch/", views.batch_page, name="batch_page"),
]
