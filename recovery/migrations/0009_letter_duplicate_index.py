"""Duplicate detection looks up the first letter with the same body and origin: an index on
(content_hash, origin, id) answers it with one index probe, even when a million letters share
one body. It replaces the index on content_hash alone (its prefix)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("recovery", "0008_replay"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="deadletter", name="letter_content_hash_idx"),
        migrations.AddIndex(
            model_name="deadletter",
            index=models.Index(fields=["content_hash", "origin", "id"], name="letter_duplicate_idx"),
        ),
    ]
