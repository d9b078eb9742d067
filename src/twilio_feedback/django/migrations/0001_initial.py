"""The ``django://`` store's table (``twilio_feedback_record``) and its two indexes: the
outbox (``state, lease_until``) for the sweep, the expiry for the purge."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="FeedbackRecord",
            fields=[
                ("tracking_id", models.CharField(max_length=64, primary_key=True, serialize=False)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "pending"),
                            ("confirmed", "confirmed"),
                            ("reported", "reported"),
                            ("failed", "failed"),
                        ],
                        max_length=16,
                    ),
                ),
                ("message_sid", models.CharField(blank=True, max_length=34, null=True)),
                ("account_sid", models.CharField(blank=True, max_length=34, null=True)),
                ("expires_at", models.FloatField()),
                ("created_at", models.FloatField(default=0.0)),
                ("confirmed_at", models.FloatField(blank=True, null=True)),
                ("lease_until", models.FloatField(default=0.0)),
                ("attempts", models.IntegerField(default=0)),
                ("error_code", models.IntegerField(blank=True, null=True)),
                ("error_message", models.CharField(blank=True, max_length=500, null=True)),
            ],
            options={
                "verbose_name": "feedback record",
                "db_table": "twilio_feedback_record",
                "indexes": [
                    models.Index(fields=["state", "lease_until"], name="twilio_feedback_outbox"),
                    models.Index(fields=["expires_at"], name="twilio_feedback_expiry"),
                ],
            },
        ),
    ]
