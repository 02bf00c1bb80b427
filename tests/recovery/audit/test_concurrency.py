"""Several processes appending at once leave one gapless, valid chain (the advisory lock
serialises appends from the read of the head to the commit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from recovery.audit.verification import verify_chain
from recovery.models import AuditEvent

ROOT = Path(__file__).resolve().parents[3]
WRITERS = 4
EVENTS_EACH = 60

WRITER = """
import os, sys, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
django.setup()
from django.db import transaction
from recovery.audit.services import audit_record
from recovery.models import AuditAction
name, count = sys.argv[1], int(sys.argv[2])
sys.stdin.readline()  # start together
for i in range(count):
    with transaction.atomic():
        audit_record(actor=name, action=AuditAction.BROKERS_CONFIGURED, summary=f"{name} {i}", after={"i": i})
"""


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_leave_a_gapless_valid_chain() -> None:
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, f"writer{n}", str(EVENTS_EACH)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for n in range(WRITERS)
    ]
    for proc in procs:
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, WRITERS * EVENTS_EACH + 1))
    for n in range(WRITERS):
        assert AuditEvent.objects.filter(actor_name=f"system:writer{n}").count() == EVENTS_EACH
    # the writers really interleaved (otherwise the test proves nothing about concurrency)
    names = list(AuditEvent.objects.order_by("seq").values_list("actor_name", flat=True))
    switches = sum(1 for a, b in zip(names, names[1:], strict=False) if a != b)
    assert switches > WRITERS
    report = verify_chain()
    assert report.ok, report.message
