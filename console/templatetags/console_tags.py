from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """Indented JSON text; autoescaping still applies, so hostile strings render inert."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@register.filter
def is_text(value: Any) -> bool:
    """Whether a JSON value is a plain string (shown as it is rather than as JSON)."""
    return isinstance(value, str)
