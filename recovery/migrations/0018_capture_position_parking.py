# Capture completes and loses nothing (issue 15, part 7): each letter's position in its DLQ, where
# an oversize body is parked in object storage, and what a capture pass left on the broker.

from django.db import migrations, models

SEQUENCE = "recovery_deadletter_position_seq"

# Letters captured before this release get their position from what the broker recorded (Kafka
# offset, SQS FIFO SequenceNumber), else in the order they were captured; the sequence then
# continues after them.
BACKFILL = """
CREATE SEQUENCE IF NOT EXISTS recovery_deadletter_position_seq;
UPDATE recovery_deadletter AS l SET position = CASE
    WHEN b.kind = 'kafka' AND l.properties->>'offset' ~ '^[0-9]{1,40}$' THEN (l.properties->>'offset')::numeric
    WHEN b.kind = 'sqs' AND l.properties->>'SequenceNumber' ~ '^[0-9]{1,40}$'
        THEN (l.properties->>'SequenceNumber')::numeric
    END
FROM recovery_deadletterqueue AS q JOIN recovery_broker AS b ON b.id = q.broker_id
WHERE q.id = l.dlq_id;
UPDATE recovery_deadletter AS l SET position = numbered.n
FROM (
    SELECT id, row_number() OVER (ORDER BY captured_at, id) AS n FROM recovery_deadletter WHERE position IS NULL
) AS numbered
WHERE numbered.id = l.id;
SELECT setval('recovery_deadletter_position_seq', GREATEST((SELECT count(*) FROM recovery_deadletter), 1));
"""


class Migration(migrations.Migration):
    dependencies = [
        ("recovery", "0017_targets_and_duplicates"),
    ]

    operations = [
        migrations.AddField(
            model_name="deadletter",
            name="position",
            field=models.DecimalField(
                blank=True,
                decimal_places=0,
                help_text="its place in the DLQ, in the broker's order: the SQS FIFO SequenceNumber, the Kafka "
                "offset (within its partition), else the order capture read it in (a console-wide sequence)",
                max_digits=40,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="deadletter",
            name="parked_bucket",
            field=models.CharField(
                blank=True, db_default="", default="", help_text="oversize: the bucket holding its body", max_length=255
            ),
        ),
        migrations.AddField(
            model_name="deadletter",
            name="parked_key",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="oversize: the object key of its body",
                max_length=1024,
            ),
        ),
        migrations.AddField(
            model_name="capturepass",
            name="remaining",
            field=models.PositiveBigIntegerField(
                blank=True,
                help_text="messages the broker still held in the DLQ when the pass ended (its depth); empty: not read",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="capturepass",
            name="limit_reached",
            field=models.BooleanField(
                default=False, help_text="the pass stopped at its limit (RECOVERY_CAPTURE_MAX_PER_PASS or --max)"
            ),
        ),
        migrations.RunSQL(BACKFILL, reverse_sql=f"DROP SEQUENCE IF EXISTS {SEQUENCE};"),
    ]
