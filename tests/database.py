"""Test databases copied from a template migrated once (tests/conftest.py uses this fixture in
place of pytest-django's own ``django_db_setup``).

pytest-django migrates a fresh database for every test process: six xdist workers ran the
migrations at once on two cores, about 11 s before each worker's first test, and the alone phase
ran them again. Here the first process to arrive migrates one template database,
``<test name>_template``, and marks it with a fingerprint of every migration file and the Django
version; every process then copies it (PostgreSQL ``CREATE DATABASE ... TEMPLATE``, well under a
second). A later run whose migrations have not changed copies the same template without
migrating at all; a changed, added or removed migration file changes the fingerprint, and the
template is made again. An advisory lock on the server serialises the making and the copying,
so two processes never build it at once and no copy is taken while it is being built.

Each process's own database (``test_<name>`` or ``test_<name>_gwN``) is dropped at the end, as
pytest-django does; the template stays for the next run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import django
import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection

# pg_advisory_lock key: any constant of our own (b"dlqtmpl" read as an integer).
_LOCK_KEY = int.from_bytes(b"dlqtmpl", "big")


def migrations_fingerprint() -> str:
    """sha1 of the Django version and the path and bytes of every installed app's migration
    files: what decides whether a template still matches the code."""
    digest = hashlib.sha1(django.get_version().encode(), usedforsecurity=False)
    for app in sorted(apps.get_app_configs(), key=lambda a: a.label):
        folder = Path(app.path) / "migrations"
        for path in sorted(folder.glob("*.py")):
            digest.update(f"{app.label}/{path.name}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _template_fingerprint(cursor, template: str) -> str | None:
    cursor.execute(
        "select shobj_description(oid, 'pg_database') from pg_database where datname = %s",
        [template],
    )
    row = cursor.fetchone()
    return None if row is None else (row[0] or "")


def _make_template(cursor, template: str, fingerprint: str) -> None:
    """Migrates a fresh database the usual way (Django's create_test_db, under the process's own
    test name), then turns it into the template: renamed, and marked with ``fingerprint`` only
    once the migrations have all run."""
    own_name = connection.creation._get_test_db_name()
    original_name = connection.settings_dict["NAME"]
    cursor.execute(f"drop database if exists {_quote(template)}")
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False, keepdb=False)
    connection.close()
    cursor.execute(f"alter database {_quote(own_name)} rename to {_quote(template)}")
    cursor.execute(f"comment on database {_quote(template)} is %s", [fingerprint])
    # create_test_db pointed the settings at the test database; the copy below does that again.
    connection.settings_dict["NAME"] = original_name


def _copy_template(cursor, template: str) -> None:
    own_name = connection.creation._get_test_db_name()
    cursor.execute(f"drop database if exists {_quote(own_name)} with (force)")
    cursor.execute(f"create database {_quote(own_name)} template {_quote(template)}")


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker,
    django_db_modify_db_settings: None,
) -> Iterator[None]:
    """This process's test database, copied from the template (made first when missing or
    stale); dropped at the end."""
    original_name = connection.settings_dict["NAME"]
    own_name = connection.creation._get_test_db_name()
    template = re.sub(r"_gw\d+$", "", own_name) + "_template"
    fingerprint = migrations_fingerprint()
    with django_db_blocker.unblock():
        with connection._nodb_cursor() as cursor:
            cursor.execute("select pg_advisory_lock(%s)", [_LOCK_KEY])
            try:
                if _template_fingerprint(cursor, template) != fingerprint:
                    _make_template(cursor, template, fingerprint)
                _copy_template(cursor, template)
            finally:
                cursor.execute("select pg_advisory_unlock(%s)", [_LOCK_KEY])
        connection.close()
        settings.DATABASES["default"]["NAME"] = own_name
        connection.settings_dict["NAME"] = own_name
        connection.ensure_connection()
    yield
    with django_db_blocker.unblock():
        connection.creation.destroy_test_db(original_name, verbosity=0, keepdb=False)
