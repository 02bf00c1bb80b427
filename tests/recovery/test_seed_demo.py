"""`manage.py seed_demo` (run by `make run`) creates one user per role, prints each password once,
and configures the local brokers with credential references only."""

from __future__ import annotations

import io
import re
import stat
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from recovery.models import Broker
from recovery.permissions import Role, user_roles


def seed(path: Path) -> str:
    out = io.StringIO()
    call_command("seed_demo", credentials_file=str(path), stdout=out)
    return out.getvalue()


def printed_credentials(output: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(demo-\w+)\s+(\S+)$", output, re.M))


@pytest.mark.django_db
def test_it_creates_one_user_per_role_and_they_can_log_in(tmp_path: Path, django_user_model) -> None:
    credentials = printed_credentials(seed(tmp_path / "creds"))
    assert set(credentials) == {f"demo-{r.value}" for r in Role}
    for role in Role:
        username = f"demo-{role.value}"
        assert user_roles(django_user_model.objects.get(username=username)) == {role}
        client = Client()
        response = client.post(reverse("login"), {"username": username, "password": credentials[username]})
        assert response.status_code == 302, f"{username} could not log in"
        assert client.get(reverse("overview")).status_code == 200


@pytest.mark.django_db
def test_passwords_are_printed_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "creds"
    first = printed_credentials(seed(path))
    second_output = seed(path)
    assert printed_credentials(second_output) == {}
    assert "already exist" in second_output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dict(line.split(" ", 1) for line in path.read_text().splitlines()) == first


@pytest.mark.django_db
def test_local_brokers_are_configured_by_reference(tmp_path: Path) -> None:
    seed(tmp_path / "creds")
    brokers = {b.name: b for b in Broker.objects.all()}
    assert set(brokers) == {"local-rabbitmq", "local-kafka", "local-sqs"}
    assert brokers["local-rabbitmq"].credentials_ref == "env:LOCAL_RABBITMQ"
    assert brokers["local-sqs"].credentials_ref == "env:LOCAL_SQS"
    for broker in brokers.values():
        stored = f"{broker.endpoint} {broker.options} {broker.credentials_ref}"
        assert "guest:guest" not in stored and "test:test" not in stored


@pytest.mark.django_db
def test_it_refuses_a_credentials_file_that_is_not_a_regular_file(tmp_path: Path) -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="not a regular file"):
        seed(tmp_path)  # a directory; /dev/null would be chmod-ed and break the machine
