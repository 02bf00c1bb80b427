"""Parking of oversize bodies in S3-compatible object storage. The only module that imports boto3
for object storage (recovery/brokers/sqs.py has its own client for SQS).

A message larger than ``RECOVERY_CAPTURE_MAX_BODY`` is not stored in PostgreSQL: its bytes are
put into the bucket ``RECOVERY_PARKING_S3_BUCKET`` before its dead-letter row is committed, and
the row records where (bucket and key; ``body_size`` and ``content_hash`` are the object's size
and SHA-256). Only then may capture remove the message from the broker (invariant 1: capture
before remove; the parked bytes are part of what capture must hold first). A message whose
bytes could not be parked stays on the broker and the pass reports the error.

Keys are content addressed, ``<prefix><dlq id>/<sha256>``: parking the same bytes twice (a
redelivery, a pass that died after the upload) writes the same object again, and an object whose
row never committed is an orphan that a later pass of the same message reuses.

Credentials come from the environment (``RECOVERY_PARKING_S3_ACCESS_KEY_ID`` /
``..._SECRET_ACCESS_KEY``, or ``*_FILE``, else boto3's own chain: instance roles, AWS_* variables),
never from the database (invariant 9), and are scrubbed from every error message.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from recovery.errors import RecoveryError

NOT_CONFIGURED = "object storage for oversize bodies is not configured (set RECOVERY_PARKING_S3_BUCKET)"


class ParkingError(RecoveryError):
    """Object storage could not take or give back a parked body; nothing was lost: a message that
    could not be parked stays on its broker, a body that cannot be read back is not served."""


@dataclass(frozen=True)
class ParkedBody:
    """Where an oversize body lies: what the dead letter records."""

    bucket: str
    key: str
    size: int
    sha256: str


def parking_configured() -> bool:
    return bool(settings.RECOVERY_PARKING_S3_BUCKET)


def parking_key(*, dlq_id: int, sha256: str) -> str:
    return f"{settings.RECOVERY_PARKING_S3_PREFIX}{dlq_id}/{sha256}"


def body_park(*, dlq_id: int, data: bytes, sha256: str) -> ParkedBody:
    """Put ``data`` into the parking bucket and return where it lies. Raises ParkingError when
    storage is not configured or refuses; the caller then leaves the message on its broker."""
    if not parking_configured():
        raise ParkingError(NOT_CONFIGURED)
    bucket = settings.RECOVERY_PARKING_S3_BUCKET
    key = parking_key(dlq_id=dlq_id, sha256=sha256)
    try:
        _client().put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            ContentType="application/octet-stream",
            Metadata={"sha256": sha256, "size": str(len(data))},
        )
    except (BotoCoreError, ClientError) as exc:
        raise ParkingError(_describe(f"cannot park {len(data)} bytes at s3://{bucket}/{key}", exc)) from None
    return ParkedBody(bucket=bucket, key=key, size=len(data), sha256=sha256)


def body_fetch(*, bucket: str, key: str, size: int, sha256: str) -> bytes:
    """The parked bytes, checked against the size and SHA-256 recorded at capture: a body that does
    not match is refused (ParkingError), never served as if it were the letter's."""
    try:
        response = _client().get_object(Bucket=bucket, Key=key)
        data = response["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise ParkingError(_describe(f"cannot read the parked body at s3://{bucket}/{key}", exc)) from None
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise ParkingError(
            f"the parked body at s3://{bucket}/{key} does not match the size and SHA-256 recorded at capture"
        )
    return data


@functools.cache
def _client_for(endpoint: str, region: str, key_id: str, secret: str, timeout: int) -> Any:
    """One client per configuration and process (boto3 clients are thread-safe)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        config=Config(
            connect_timeout=min(timeout, 5),
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            # path-style URLs work with every S3-compatible endpoint (LocalStack, MinIO, Ceph)
            s3={"addressing_style": "path"},
        ),
    )


def _client() -> Any:
    try:
        return _client_for(
            settings.RECOVERY_PARKING_S3_ENDPOINT_URL,
            settings.RECOVERY_PARKING_S3_REGION,
            settings.RECOVERY_PARKING_S3_ACCESS_KEY_ID or "",
            settings.RECOVERY_PARKING_S3_SECRET_ACCESS_KEY or "",
            settings.RECOVERY_PARKING_TIMEOUT,
        )
    except (BotoCoreError, ValueError) as exc:
        raise ParkingError(_describe("cannot configure the object storage client", exc)) from None


def _describe(context: str, exc: Exception) -> str:
    """The error for an operator, with the storage's code and message and no secret (invariant 9)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        detail = f"{error.get('Code', '')}: {error.get('Message', '') or exc}"
    else:
        detail = str(exc) or type(exc).__name__
    secret = settings.RECOVERY_PARKING_S3_SECRET_ACCESS_KEY or ""
    if len(secret) >= 4:
        detail = detail.replace(secret, "***")
    return f"{context}: {detail}"[:2000]
