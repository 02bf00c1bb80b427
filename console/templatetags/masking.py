"""Template side of recovery.masking (issue 5, part 6): every screen that shows letter content in
a template masks it here, server-side, for users without the unmask grant.

    {% load masking %}
    {% masked letter.error_message letter %}                    masked by the letter's DLQ for the
                                                                signed-in user
    {% masked letter.error_message|default:letter.reason letter as message %}{{ message|truncatechars:140 }}
    {{ value|mask_text:masker }}                                with a Masker the view put in the
                                                                context (recovery.masking.masker_for)

``masked`` needs ``user`` (or ``request``) in the context, which every page has. Its output is
escaped like any variable. For a list, select_related("dlq") or not: recovery.masking.letter_masker
reads each DLQ's mask settings at most once per request. Mask before cutting: truncate the result,
never the input."""

from __future__ import annotations

from typing import Any

from django import template

from recovery.masking import Masker, letter_masker

register = template.Library()


@register.simple_tag(takes_context=True)
def masked(context: template.Context, value: Any, letter: Any) -> str:
    """``value`` (text from ``letter``) with the e-mail and card detectors of the letter's DLQ
    applied, unless the signed-in user holds the unmask grant."""
    if value in (None, ""):
        return ""
    user = context.get("user") or getattr(context.get("request"), "user", None)
    return letter_masker(letter, user).text(str(value))


@register.filter
def mask_text(value: Any, masker: Masker) -> str:
    if value in (None, ""):
        return ""
    return masker.text(str(value))
