# Drill runs join the one job lifecycle (recovery.models.jobs.BackgroundJob): issue 14.

from datetime import timedelta

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models
from django.db.models import F
from django.db.models.functions import Coalesce

LEASE = timedelta(seconds=120)  # the lease the runner renewed before it kept a heartbeat
STEPS = 8  # len(DrillStep): a started run's progress is its steps recorded out of these
OUTCOMES = (("passed", "succeeded"), ("failed", "failed"), ("skipped", "cancelled"))


def forward(apps, schema_editor):
    """An ended run's state becomes its outcome, and its job state follows: passed -> succeeded,
    failed -> failed, skipped -> cancelled. A replaying run is running, or queued when it had
    handed its worker over (no job held its lease): its continuation job is in the queue, and the
    runner now claims queued runs only. A running run's heartbeat is its lease's last renewal; a
    queued run was enqueued when it was created, or when its continuation was. A started run's
    progress is the steps it recorded."""
    runs = apps.get_model("recovery", "DrillRun")
    now = django.utils.timezone.now()
    for outcome, state in OUTCOMES:
        runs.objects.filter(state=outcome).update(outcome=outcome, state=state, heartbeat_at=F("finished_at"))
    held = models.Q(lease_owner__gt="", lease_until__gt=now)
    runs.objects.filter(~held, state="replaying").update(state="queued")
    runs.objects.filter(state="replaying").update(state="running")
    runs.objects.filter(state="running").update(heartbeat_at=Coalesce(F("lease_until") - LEASE, F("started_at")))
    runs.objects.update(enqueued_at=F("created_at"))
    runs.objects.filter(state="queued", lease_until__isnull=False).update(enqueued_at=F("lease_until"))
    started = list(runs.objects.filter(started_at__isnull=False).only("pk", "steps"))
    for run in started:
        run.total, run.deliveries = STEPS, 1
        run.processed = len({entry.get("step") for entry in run.steps or [] if isinstance(entry, dict)})
    runs.objects.bulk_update(started, ["total", "deliveries", "processed"], batch_size=500)
    _check_constraints_now(schema_editor)


def backward(apps, schema_editor):
    """The run's state from its outcome, "replaying" from its phase, and a lease from its heartbeat
    (a running run is held by a job) or its enqueueing (a queued continuation is free to claim)."""
    runs = apps.get_model("recovery", "DrillRun")
    runs.objects.exclude(outcome="").update(state=F("outcome"))
    second_phase = runs.objects.filter(replay_run__isnull=False)
    second_phase.filter(state="queued").update(state="replaying", lease_until=F("enqueued_at"))
    runs.objects.filter(state="running").update(
        lease_owner="migrated", lease_until=Coalesce(F("heartbeat_at"), F("started_at"), F("created_at")) + LEASE
    )
    second_phase.filter(state="running").update(state="replaying")
    _check_constraints_now(schema_editor)


def _check_constraints_now(schema_editor):
    """Fire the deferred foreign-key checks of the rows just updated: PostgreSQL refuses to alter
    a table with pending trigger events in the same transaction (the lease columns go next)."""
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    schema_editor.execute("SET CONSTRAINTS ALL DEFERRED")


class Migration(migrations.Migration):
    dependencies = [("recovery", "0015_job_lifecycle")]

    operations = [
        migrations.AddField(
            model_name="drillrun",
            name="deliveries",
            field=models.PositiveIntegerField(default=0, help_text="times a worker claimed it"),
        ),
        migrations.AddField(
            model_name="drillrun",
            name="enqueued_at",
            field=models.DateTimeField(
                default=django.utils.timezone.now, help_text="when its job was last sent to a queue"
            ),
        ),
        migrations.AddField(
            model_name="drillrun",
            name="error",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="drillrun",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="drillrun",
            name="log",
            field=models.JSONField(blank=True, default=list, help_text="notable events, oldest first: [{at, message}]"),
        ),
        migrations.AddField(
            model_name="drillrun",
            name="outcome",
            field=models.CharField(
                blank=True,
                choices=[("passed", "Passed"), ("failed", "Failed"), ("skipped", "Skipped")],
                help_text="what it found; blank while active",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="drillrun",
            name="processed",
            field=models.PositiveBigIntegerField(default=0, help_text="progress: items done so far"),
        ),
        migrations.AddField(
            model_name="drillrun",
            name="retries",
            field=models.PositiveIntegerField(default=0, help_text="times the watchdog enqueued its lost job again"),
        ),
        migrations.AddField(
            model_name="drillrun",
            name="total",
            field=models.PositiveBigIntegerField(blank=True, help_text="progress: items to do, when known", null=True),
        ),
        migrations.AlterField(
            model_name="drillrun",
            name="replay_run",
            field=models.ForeignKey(
                blank=True,
                help_text="set once the replay started: the run is in its second phase",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="recovery.replayrun",
            ),
        ),
        migrations.AlterField(
            model_name="drillrun",
            name="state",
            field=models.CharField(
                choices=[
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                ],
                default="queued",
                max_length=16,
            ),
        ),
        migrations.AddIndex(
            model_name="drillrun",
            index=models.Index(
                condition=models.Q(("state__in", ["queued", "running"])),
                fields=["state", "enqueued_at"],
                name="drillrun_active_idx",
            ),
        ),
        migrations.RunPython(forward, backward),
        migrations.RemoveField(model_name="drillrun", name="lease_owner"),
        migrations.RemoveField(model_name="drillrun", name="lease_until"),
    ]
