# Issue 15, part 3 (verification with evidence, circuit breaker) and part 8 (re-sent counters).

from django.db import migrations, models

RUN_STATES = [
    ("pending", "Pending"),
    ("running", "Running"),
    ("paused", "Paused"),
    ("verifying", "Verifying"),
    ("verified", "Verified"),
    ("completed_not_verified", "Completed, not verified"),
    ("verification_failed", "Verification failed"),
    ("stopped", "Stopped by a stop condition"),
    ("aborted", "Aborted"),
    ("failed", "Failed"),
]
NOT_VERIFIED = "completed, not verified: no verification step ran (relabelled by migration 0021, issue 15)"


def forward(apps, schema_editor):
    """Runs that ended "verified" although no verification step ran (their evidence list is empty:
    "no verification step configured") were never verified (invariant 12): they become
    "completed, not verified", each with a run event saying why."""
    runs = apps.get_model("recovery", "ReplayRun")
    events = apps.get_model("recovery", "RunEvent")
    unverified = runs.objects.filter(state="verified", verification=[])
    events.objects.bulk_create(
        [events(run_id=pk, kind="relabelled", message=NOT_VERIFIED) for pk in unverified.values_list("pk", flat=True)]
    )
    unverified.update(state="completed_not_verified")


def backward(apps, schema_editor):
    runs = apps.get_model("recovery", "ReplayRun")
    relabelled = apps.get_model("recovery", "RunEvent").objects.filter(kind="relabelled", message=NOT_VERIFIED)
    runs.objects.filter(state="completed_not_verified", pk__in=relabelled.values("run_id")).update(state="verified")
    relabelled.delete()


class Migration(migrations.Migration):
    dependencies = [("recovery", "0020_letter_lifecycle")]

    operations = [
        migrations.AddField(
            model_name="replayplan",
            name="breaker_cooldown_seconds",
            field=models.PositiveIntegerField(
                default=0,
                help_text="after a stop condition pauses a run: wait this long, then send one probe batch; 0 = off",
            ),
        ),
        migrations.AddField(
            model_name="replayplan",
            name="breaker_probe_size",
            field=models.PositiveIntegerField(default=5, help_text="letters in a circuit breaker's probe batch"),
        ),
        migrations.AddField(
            model_name="replayrun",
            name="resent",
            field=models.PositiveIntegerField(default=0, help_text="published again after a worker's lease expired"),
        ),
        migrations.AddField(
            model_name="replayrun",
            name="baseline",
            field=models.JSONField(blank=True, default=dict, help_text="target depths read when the run started"),
        ),
        migrations.AddField(
            model_name="replayrun",
            name="breaker",
            field=models.JSONField(blank=True, default=dict, help_text="circuit breaker: state, opened_at, probes"),
        ),
        migrations.AddField(
            model_name="ledgerentry",
            name="resent",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AlterField(
            model_name="replayrun",
            name="state",
            field=models.CharField(choices=RUN_STATES, default="pending", max_length=24),
        ),
        migrations.RunPython(forward, backward),
    ]
