"""Issue 15, parts 5 and 6.

- A plan item records where its target came from (``target_source``: plan override, broker
  record, framework record, message headers, DLQ default), so the approver sees it (invariant 14).
- A letter records which message it is a delivery of (``duplicate_key``), and duplicates are
  looked up by it instead of by origin and body (the old index goes with the old rule).
- The letters the old rule marked duplicate are re-evaluated: wrongly marked ones return to open
  with the outcome the rules give them, true duplicates are held instead of discarded, audited
  (recovery.classification.reevaluate).
"""

from django.db import migrations, models


def reevaluate_duplicates(apps, schema_editor):
    from recovery.classification.reevaluate import duplicates_reevaluate

    duplicates_reevaluate(
        rule_model=apps.get_model("recovery", "ClassificationRule"),
        event_model=apps.get_model("recovery", "AuditEvent"),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("recovery", "0016_drill_run_job_lifecycle"),
    ]

    operations = [
        migrations.AddField(
            model_name="planitem",
            name="target_source",
            field=models.CharField(
                blank=True,
                choices=[
                    ("override", "plan override"),
                    ("broker", "broker record"),
                    ("framework", "framework record"),
                    ("headers", "from message headers"),
                    ("origin", "failure origin (captured before sources were recorded)"),
                    ("dlq_default", "DLQ default"),
                ],
                db_default="",
                default="",
                help_text="where the target came from: plan override, broker or framework record, message headers, "
                "DLQ default",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="deadletter",
            name="duplicate_key",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="names the message this letter is a delivery of (recovery.classification.duplicates); "
                "empty: unknown",
                max_length=64,
            ),
        ),
        migrations.RemoveIndex(model_name="deadletter", name="letter_duplicate_idx"),
        migrations.AddIndex(
            model_name="deadletter",
            index=models.Index(
                condition=models.Q(("duplicate_key", ""), _negated=True),
                fields=["duplicate_key", "id"],
                name="letter_duplicate_key_idx",
            ),
        ),
        migrations.RunPython(reevaluate_duplicates, migrations.RunPython.noop),
    ]
