"""Maskers per user and letter, and masked copies of letters for display."""

from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Any

from recovery.masking.masker import Masker

if TYPE_CHECKING:
    from recovery.models import DeadLetter, DeadLetterQueue


def masker_for(dlq: DeadLetterQueue, user: Any) -> Masker:
    """The masker of ``dlq`` for ``user``: identity if the user holds the unmask grant."""
    from recovery.permissions import user_unmasked  # here: the masker itself needs no Django setup

    return Masker.from_dlq(dlq, unmasked=user_unmasked(user))


def letter_masker(letter: DeadLetter, user: Any) -> Masker:
    """The masker for one letter: from ``letter.dlq`` when it is loaded, else from the DLQ's mask
    settings read once per DLQ and cached on the user object (one request)."""
    from recovery.models import DeadLetter, DeadLetterQueue

    if DeadLetter.dlq.is_cached(letter):
        return masker_for(letter.dlq, user)
    cache: dict[int, Masker] = getattr(user, "_recovery_maskers", None) or {}
    if letter.dlq_id not in cache:
        dlq = DeadLetterQueue.objects.only("mask_json_paths", "mask_headers", "mask_emails", "mask_card_numbers").get(
            pk=letter.dlq_id
        )
        cache[letter.dlq_id] = masker_for(dlq, user)
        with contextlib.suppress(AttributeError):  # an object without attributes: no cache, still right
            user._recovery_maskers = cache
    return cache[letter.dlq_id]


MASKED_TEXT_FIELDS = ("error_class", "error_message", "stack_trace", "reason", "origin", "source_message_id")
MASKED_JSON_FIELDS = ("headers", "properties", "failure_extras")


def mask_letter(letter: DeadLetter, masker: Masker) -> DeadLetter:
    """An unsaved copy of ``letter`` for display, content fields masked. The body and any deferred
    content field are blanked on the copy, so a template can never lazy-load them in clear (mask
    a body with ``masker.body_parts``). The original instance is not changed. Never save the copy."""
    shown = copy.copy(letter)
    if not masker.active:
        return shown
    loaded = letter.__dict__
    for name in MASKED_TEXT_FIELDS:
        setattr(shown, name, masker.text(loaded[name]) if name in loaded else "")
    for name in MASKED_JSON_FIELDS:
        setattr(shown, name, masker.headers(loaded[name]) if name in loaded else {})
    shown.body = b""
    return shown
