"""The shipped default rules sort real-looking failures as the issue asks: timeouts and
connection trouble replay, decode errors are poison, schema errors are schema, business
refusals are business, expired messages are discarded."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from recovery.classification.defaults import DEFAULT_RULES
from recovery.classification.rules import Matcher, validate_conditions
from recovery.classification.subject import LetterFacts

MATCHER = Matcher(SimpleNamespace(id=i, **spec) for i, spec in enumerate(DEFAULT_RULES, start=1))


def test_every_shipped_rule_is_valid_and_named_once() -> None:
    for spec in DEFAULT_RULES:
        validate_conditions(spec["conditions"])
    assert len({spec["name"] for spec in DEFAULT_RULES}) == len(DEFAULT_RULES)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"error_class": "java.net.SocketTimeoutException", "error_message": "Read timed out"}, "transient/replay"),
        (
            {"error_class": "requests.exceptions.ReadTimeout", "error_message": "HTTPSConnectionPool: Read timed out."},
            "transient/replay",
        ),
        (
            {"error_class": "System.TimeoutException", "error_message": "The operation has timed out."},
            "transient/replay",
        ),
        ({"error_class": "java.net.ConnectException", "error_message": "Connection refused"}, "transient/replay"),
        (
            {"error_class": "ConnectionResetError", "error_message": "[Errno 104] Connection reset by peer"},
            "transient/replay",
        ),
        (
            {
                "error_class": "org.springframework.kafka.listener.ListenerExecutionFailedException",
                "error_message": "Listener method threw exception; nested exception is "
                "java.net.ConnectException: Connection refused",
            },
            "transient/replay",
        ),
        (
            {
                "error_class": "requests.exceptions.HTTPError",
                "error_message": "503 Server Error: Service Unavailable for url: http://x",
            },
            "transient/replay",
        ),
        (
            {
                "error_class": "botocore.exceptions.ClientError",
                "error_message": "An error occurred (ThrottlingException): Rate exceeded",
            },
            "transient/replay",
        ),
        ({"error_class": "HttpClientError", "error_message": "status 429 returned by payments"}, "transient/replay"),
        (
            {"error_class": "org.springframework.dao.CannotAcquireLockException", "error_message": "lock"},
            "transient/replay",
        ),
        (
            {
                "error_class": "json.decoder.JSONDecodeError",
                "error_message": "Expecting value: line 1 column 1 (char 0)",
            },
            "poison/hold",
        ),
        (
            {
                "error_class": "UnicodeDecodeError",
                "error_message": "'utf-8' codec can't decode byte 0xff in position 0",
            },
            "poison/hold",
        ),
        (
            {
                "error_class": "com.fasterxml.jackson.core.JsonParseException",
                "error_message": "Unexpected character ('<')",
            },
            "poison/hold",
        ),
        (
            {
                "error_class": "org.springframework.kafka.support.serializer.DeserializationException",
                "error_message": "failed",
            },
            "poison/hold",
        ),
        ({"content_type": "application/json", "body": b"<html>oops</html>"}, "poison/hold"),
        ({"content_type": "text/plain", "body": b"\xff\xfe\xfd"}, "poison/hold"),
        (
            {"error_class": "jsonschema.exceptions.ValidationError", "error_message": "'sku' is a required property"},
            "schema/hold",
        ),
        (
            {
                "error_class": "org.apache.avro.AvroTypeException",
                "error_message": "Expected start-union. Got VALUE_STRING",
            },
            "schema/hold",
        ),
        (
            {
                "error_class": "com.google.protobuf.InvalidProtocolBufferException",
                "error_message": "Protocol message contained an invalid tag (zero).",
            },
            "schema/hold",
        ),
        (
            {
                "error_class": "org.apache.kafka.common.errors.SerializationException",
                "error_message": "Error deserializing Avro message for id 42",
            },
            "schema/hold",
        ),
        (
            {
                "error_class": "org.springframework.messaging.converter.MessageConversionException",
                "error_message": "Cannot convert",
            },
            "schema/hold",
        ),
        (
            {
                "error_class": "org.apache.kafka.connect.errors.DataException",
                "error_message": "Struct schemas do not match.",
            },
            "schema/hold",
        ),
        (
            {"error_class": "com.acme.payments.InsufficientFundsException", "error_message": "balance 10 < 20"},
            "business/hold",
        ),
        ({"error_class": "com.acme.orders.OrderNotFoundException", "error_message": "order 42"}, "business/hold"),
        (
            {"error_class": "java.lang.IllegalStateException", "error_message": "Order 42 already shipped"},
            "business/hold",
        ),
        (
            {"error_class": "Order.DoesNotExist", "error_message": "Order matching query does not exist."},
            "business/hold",
        ),
        ({"error_class": "java.io.FileNotFoundException", "error_message": "/etc/app.conf"}, "unknown/hold"),
        ({"reason": "expired"}, "expired/discard"),
        ({"reason": "maxlen"}, "transient/replay"),
        ({"reason": "rejected"}, "unknown/hold"),
        ({"reason": "maxReceiveCount exceeded", "error_class": "com.acme.Weird"}, "unknown/hold"),
        ({"error_class": "psycopg.errors.UniqueViolation", "error_message": "duplicate key value"}, "duplicate/hold"),
    ],
)
def test_shipped_rules_classify_common_failures(facts: dict, expected: str) -> None:
    outcome = MATCHER.classify(LetterFacts(**facts), datetime.now(UTC))
    assert f"{outcome.category}/{outcome.disposition}" == expected
