from django.urls import path

from apps.compliance import views

app_name = "compliance"

urlpatterns = [
    path("subjects/", views.subjects, name="subjects"),
    path("subjects/consents/", views.consent_record, name="consent_record"),
    path("subjects/export/", views.subject_export, name="subject_export"),
    path("decisions/<uuid:decision_id>/explanation/", views.explanation, name="explanation"),
    path("reviews/", views.reviews, name="reviews"),
    path("reviews/<int:review_id>/", views.review_detail, name="review_detail"),
    path("erasure/", views.erasures, name="erasures"),
    path(
        "erasure/<uuid:request_id>/approve/",
        views.erasure_decide,
        {"verdict": "approve"},
        name="erasure_approve",
    ),
    path(
        "erasure/<uuid:request_id>/reject/",
        views.erasure_decide,
        {"verdict": "reject"},
        name="erasure_reject",
    ),
    path(
        "erasure/<uuid:request_id>/certificate/",
        views.erasure_certificate,
        name="erasure_certificate",
    ),
    path("bias/", views.bias_reports, name="bias_reports"),
    path("bias/<uuid:report_id>/", views.bias_report, name="bias_report"),
]
