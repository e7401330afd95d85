"""Alerts name the model family they concern, so that only those who may view it see them.

Existing alerts get it from their subject: ``family:<slug>`` (error rate, latency) or
``<slug> v<version>`` (drift, bias, artifact integrity); others stay platform alerts.
"""

from typing import Any

from django.db import migrations, models


def family_from_subject(apps: Any, schema_editor: Any) -> None:
    Alert = apps.get_model("gatehouse", "Alert")
    for alert in Alert.objects.filter(family="").exclude(subject="").iterator():
        subject = alert.subject
        if subject.startswith("family:"):
            family = subject.removeprefix("family:")
        elif " v" in subject and ":" not in subject:
            family = subject.split(" v", 1)[0]
        else:
            continue
        Alert.objects.filter(pk=alert.pk).update(family=family[:64])


class Migration(migrations.Migration):
    dependencies = [
        ("gatehouse", "0004_ratelimitcounter"),
    ]

    operations = [
        migrations.AddField(
            model_name="alert",
            name="family",
            field=models.CharField(
                blank=True,
                db_index=True,
                help_text="Slug of the model family it concerns: those who may view that family "
                "see it. Empty for platform alerts (keys, sign-ins, erasures), seen by "
                "administrators and compliance officers only.",
                max_length=64,
            ),
        ),
        migrations.RunPython(family_from_subject, migrations.RunPython.noop),
    ]
