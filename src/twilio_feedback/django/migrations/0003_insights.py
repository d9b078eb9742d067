"""Conversion insights: the records' ``country`` and ``sender`` (``NULL`` when insights are
off, and in the records already there), and the table of the counts per (day, country,
sender), ``twilio_feedback_daily`` (the SQL store's schema 3).
"""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("twilio_feedback", "0002_partial_outbox_index")]

    operations = [
        migrations.AddField(
            model_name="feedbackrecord",
            name="country",
            field=models.CharField(blank=True, max_length=2, null=True),
        ),
        migrations.AddField(
            model_name="feedbackrecord",
            name="sender",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.CreateModel(
            name="FeedbackDaily",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("day", models.IntegerField()),
                ("country", models.CharField(max_length=2)),
                ("sender", models.CharField(max_length=64)),
                ("sent", models.IntegerField(default=0)),
                ("confirmed", models.IntegerField(default=0)),
                ("reported", models.IntegerField(default=0)),
                ("failed", models.IntegerField(default=0)),
                ("ttc_0", models.IntegerField(default=0)),
                ("ttc_1", models.IntegerField(default=0)),
                ("ttc_2", models.IntegerField(default=0)),
                ("ttc_3", models.IntegerField(default=0)),
                ("ttc_4", models.IntegerField(default=0)),
                ("ttc_5", models.IntegerField(default=0)),
                ("ttc_6", models.IntegerField(default=0)),
                ("ttc_7", models.IntegerField(default=0)),
                ("ttc_8", models.IntegerField(default=0)),
                ("ttc_9", models.IntegerField(default=0)),
                ("ttc_10", models.IntegerField(default=0)),
            ],
            options={
                "verbose_name": "insights day",
                "db_table": "twilio_feedback_daily",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("day", "country", "sender"), name="twilio_feedback_daily_cell"
                    )
                ],
            },
        ),
    ]
