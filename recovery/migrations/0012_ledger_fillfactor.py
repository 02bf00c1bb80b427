"""Free space in the ledger's pages, so claiming and recording a row can be HOT updates (the new
row version goes into the same page and no index entry is written): see LedgerEntry."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("recovery", "0011_ledger_run_index"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE recovery_ledgerentry SET (fillfactor = 50)",
            reverse_sql="ALTER TABLE recovery_ledgerentry RESET (fillfactor)",
        ),
    ]
