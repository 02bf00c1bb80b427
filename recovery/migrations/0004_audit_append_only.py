"""Invariant 8 at the database: audit events and checkpoints refuse UPDATE, DELETE and TRUNCATE,
whoever the client is. Only a superuser who disables the triggers can change them, and the
chain verifier then reports the first broken link."""

from django.db import migrations

TABLES = ("recovery_auditevent", "recovery_auditcheckpoint")

FUNCTION = """
CREATE OR REPLACE FUNCTION recovery_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
"""


def forwards_sql():
    statements = [FUNCTION]
    for table in TABLES:
        statements.append(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION recovery_audit_append_only();"
        )
        statements.append(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION recovery_audit_append_only();"
        )
    return "\n".join(statements)


def backwards_sql():
    statements = []
    for table in TABLES:
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table};")
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};")
    statements.append("DROP FUNCTION IF EXISTS recovery_audit_append_only();")
    return "\n".join(statements)


class Migration(migrations.Migration):
    dependencies = [("recovery", "0003_audit")]
    operations = [migrations.RunSQL(forwards_sql(), backwards_sql())]
