from django.urls import path

from apps.inference import views

app_name = "inference"

urlpatterns = [
    path("", views.predict_home, name="predict_home"),
    path("<slug:slug>/", views.predict_form, name="predict_form"),
]

urlpatterns += [
    path("<slug:slug>/batch/", views.batch_page, name="batch_page"),
]
