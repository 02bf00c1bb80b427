"""Resolve a broker's credentials reference at connect time (invariant 9).

A reference is one of:

- ``env:PREFIX``: variables ``PREFIX_USERNAME`` / ``PREFIX_PASSWORD`` (RabbitMQ, Kafka SASL) or
  ``PREFIX_ACCESS_KEY_ID`` / ``PREFIX_SECRET_ACCESS_KEY`` / ``PREFIX_SESSION_TOKEN`` (SQS);
- ``file:/path``: a JSON object file with the same keys in lower case (``username``, ...);
- blank: no credentials (or, for SQS, the AWS default credential chain).

Only the reference is stored. Secrets are returned to the adapter and go nowhere else.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from django.core.exceptions import ValidationError

from recovery.errors import BrokerError

_REF = re.compile(r"^(env:[A-Z_][A-Z0-9_]{0,100}|file:/[^\0]{1,290})$")


def validate_credentials_ref(value: str) -> None:
    if value and not _REF.match(value):
        raise ValidationError(
            "Give a reference, not a secret: env:PREFIX (upper-case variable prefix) or file:/absolute/path."
        )


def resolve_credentials(ref: str, keys: tuple[str, ...]) -> dict[str, str]:
    """Return the requested keys (lower case) that the reference provides; missing ones are omitted.

    Raises BrokerError(permanent=True) when the reference cannot be read at all.
    """
    if not ref:
        return {}
    validate_credentials_ref(ref)
    kind, _, target = ref.partition(":")
    if kind == "env":
        found = {key: os.environ.get(f"{target}_{key.upper()}") for key in keys}
        if not any(found.values()):
            names = ", ".join(f"{target}_{key.upper()}" for key in keys)
            raise BrokerError(f"credentials reference {ref}: none of {names} is set", permanent=True)
        return {key: value for key, value in found.items() if value}
    try:
        data = json.loads(Path(target).read_text())
    except (OSError, ValueError) as exc:
        raise BrokerError(f"credentials file {target} cannot be read: {type(exc).__name__}", permanent=True) from None
    if not isinstance(data, dict):
        raise BrokerError(f"credentials file {target} must hold a JSON object", permanent=True)
    return {key: str(data[key]) for key in keys if data.get(key)}
