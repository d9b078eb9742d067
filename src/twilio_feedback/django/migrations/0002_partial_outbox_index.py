"""The outbox index holds only ``confirmed`` records (what waits to be reported): pending,
reported and failed records no longer cost an index entry each (the SQL store's schema 2).
"""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("twilio_feedback", "0001_initial")]

    operations = [
        migrations.RemoveIndex(model_name="feedbackrecord", name="twilio_feedback_outbox"),
        migrations.AddIndex(
            model_name="feedbackrecord",
            index=models.Index(
                condition=models.Q(state="confirmed"),
                fields=["lease_until"],
                name="twilio_feedback_due",
            ),
        ),
    ]
