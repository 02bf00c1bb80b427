"""Maskers per user and letter (recovery.masking.letters) and the DLQ mask settings as saved by
dlq_save: lists read each DLQ's masks once, copies for display never lazy-load content in clear,
and a mask the masker could not apply is refused."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from recovery.brokers.services import dlq_save
from recovery.errors import InvalidInput
from recovery.masking import MASK, letter_masker, mask_letter, masker_for
from recovery.models import AuditAction, AuditEvent, BrokerKind, DeadLetter, DeadLetterQueue
from recovery.permissions import UNMASK_GROUP, Role
from tests.factories import BrokerFactory, DeadLetterFactory, DeadLetterQueueFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dlqs() -> list[DeadLetterQueue]:
    broker = BrokerFactory(kind=BrokerKind.RABBITMQ)
    return DeadLetterQueueFactory.create_batch(2, broker=broker, mask_headers=["x-secret"])


def _letter(dlq: DeadLetterQueue, n: int) -> DeadLetter:
    return DeadLetterFactory(
        dlq=dlq, body=b"mail alice@example.com", error_message=f"failed for user{n}@example.com",
        stack_trace="at erin@example.com", headers={"x-secret": "s3cr3t", "x-ok": "fine"},
    )  # fmt: skip


def test_a_list_reads_each_dlqs_masks_once(dlqs, make_user, django_assert_num_queries) -> None:
    for n in range(6):
        _letter(dlqs[n % 2], n)
    user = make_user(Role.OPERATOR)
    letters = list(DeadLetter.objects.defer("body", "stack_trace").order_by("id"))
    letter_masker(letters[0], user)  # the user's groups, read once per request
    with django_assert_num_queries(1):  # the second DLQ; the first is cached
        messages = [letter_masker(letter, user).text(letter.error_message) for letter in letters]
    assert messages == [f"failed for {MASK}"] * 6


def test_the_unmask_grant_makes_the_masker_the_identity(dlqs, make_user) -> None:
    user = make_user(Role.VIEWER)
    user.groups.add(Group.objects.get_or_create(name=UNMASK_GROUP)[0])
    masker = masker_for(dlqs[0], user)
    assert not masker.active and masker.text("alice@example.com") == "alice@example.com"


def test_a_display_copy_masks_content_and_never_loads_deferred_fields_in_clear(dlqs, make_user) -> None:
    _letter(dlqs[0], 1)
    letter = DeadLetter.objects.defer("body", "stack_trace").get()
    shown = mask_letter(letter, letter_masker(letter, make_user(Role.ADMIN)))
    assert shown.error_message == f"failed for {MASK}"
    assert shown.headers == {"x-secret": MASK, "x-ok": "fine"}
    assert shown.stack_trace == "" and shown.body == b""
    assert letter.error_message == "failed for user1@example.com"  # the original is untouched


def test_dlq_save_refuses_a_mask_path_it_cannot_apply(dlqs) -> None:
    with pytest.raises(InvalidInput, match="mask_json_paths"):
        dlq_save(actor="cli:test", dlq=dlqs[0], data={"mask_json_paths": ["customer.email"]})
    with pytest.raises(InvalidInput, match="mask_headers"):
        dlq_save(actor="cli:test", dlq=dlqs[1], data={"mask_headers": [""]})


def test_a_mask_change_is_audited_on_its_own_with_before_and_after(dlqs) -> None:
    dlq_save(actor="cli:test", dlq=dlqs[0], data={"mask_emails": False, "mask_json_paths": ["$.a"]})
    event = AuditEvent.objects.get(action=AuditAction.DLQ_MASKS_UPDATED)
    assert event.before["mask_emails"] is True and event.after == {
        "mask_json_paths": ["$.a"], "mask_headers": ["x-secret"], "mask_emails": False, "mask_card_numbers": True,
    }  # fmt: skip
    updated = AuditEvent.objects.get(action=AuditAction.DLQ_UPDATED)
    assert updated.before["mask_emails"] is True and updated.after["mask_emails"] is False
    dlq_save(actor="cli:test", dlq=dlqs[0], data={"capture_interval": 30})
    assert AuditEvent.objects.filter(action=AuditAction.DLQ_MASKS_UPDATED).count() == 1
