"""Masking of personal data in dead letters (issue 5, part 6), applied server-side before any
letter content reaches a page, partial, download or export, for every user without the unmask
grant (admins included). Invariant 10 holds here too: no input makes a method raise.

API for screens (call these; never show a letter's content without going through a Masker):

- ``masker_for(dlq, user) -> Masker``: the masker of one DLQ for one user.
- ``letter_masker(letter, user) -> Masker``: the same from a letter. When ``letter.dlq`` is not
  loaded, the DLQ's mask settings are read once per DLQ per request (cached on the user object),
  so a list of letters costs at most one query per distinct DLQ.
- ``mask_letter(letter, masker) -> DeadLetter``: an unsaved copy for display, with every content
  field masked (error class/message, stack trace, reason, origin, source message id, headers,
  properties, failure extras) and the body left out (use ``Masker.body_parts``). Never save it.
- ``Masker.text(str)``: the e-mail and card detectors, for free text (error messages, traces).
- ``Masker.json(obj)``: the DLQ's JSON paths, plus the detectors on every string (keys too) and
  on integers that are card numbers.
- ``Masker.headers(obj)``: header names fully masked (case-insensitive, at any depth), the
  detectors on everything else; also for broker properties and failure extras.
- ``Masker.body(bytes) -> bytes``: a whole body, for downloads and exports.
- ``Masker.body_parts(bytes, limit=None) -> MaskedBody``: the same with its kind (json, text,
  binary, withheld, empty), for display; ``limit`` masks and keeps only the first ``limit``
  characters (text) or bytes (binary); JSON is always masked whole.
- ``Masker.body_text(bytes, limit) -> str``: a masked excerpt of a body, for lists. Never cut a
  body first and mask the excerpt with ``text()``: JSON paths need the whole document.
- Templates: ``{% load masking %}`` then ``{% masked letter.error_message letter %}``, or
  ``{% masked letter.error_message letter as message %}{{ message|truncatechars:140 }}``; or
  ``{{ value|mask_text:masker }}`` with a masker the view put in the context.

What a masked value still gives away (decided here, tested in tests/recovery/test_masking.py):

- Every masked value becomes the same marker ``MASK`` whatever its type, length or shape (a
  masked JSON object or list becomes the marker string too).
- A card number keeps its last four digits (``••••1111``); its length and grouping are dropped.
- An e-mail address is masked whole, domain included.
- A masked JSON body is re-serialised: whitespace and escapes of the original are not kept.
- The body's total size, stored at capture, is still shown: it bounds all fields together,
  never one field.
- Dict keys that are themselves e-mails or card numbers are masked; if two collide, the second
  is suffixed `` (2)`` and so on, which tells how many such keys there were.

Where a value cannot be inspected the masker fails closed:

- JSON too deep for the parser (such as 10,000 nested lists) is masked as text by the detectors,
  unless the DLQ has JSON paths: then the body is withheld, since its paths cannot be located.
- Parts of a parsed document deeper than ``MAX_DEPTH`` are replaced by the marker.
- A run of more than ``MAX_CARD_RUN_DIGITS`` digits joined by spaces or dashes is masked whole;
  shorter runs are searched for 13-19 digit windows of whole digit groups that pass Luhn.
  A run of more than 19 digits with no separator is one long number, not a card, and is kept.
"""

from __future__ import annotations

from recovery.masking.detectors import MASK, MAX_CARD_RUN_DIGITS
from recovery.masking.letters import letter_masker, mask_letter, masker_for
from recovery.masking.masker import MAX_DEPTH, WITHHELD, MaskedBody, Masker
from recovery.masking.paths import JsonPathError, parse_json_path

__all__ = [
    "MASK",
    "MAX_CARD_RUN_DIGITS",
    "MAX_DEPTH",
    "WITHHELD",
    "JsonPathError",
    "MaskedBody",
    "Masker",
    "letter_masker",
    "mask_letter",
    "masker_for",
    "parse_json_path",
]
