"""The shipped default rule set: the failure shapes most DLQs hold, in the order they are tried.

Installed by ``default_rules_install`` (and ``manage.py seed_demo``); after that the rules are
ordinary rows an admin edits, disables or deletes. The conditions read the normalised failure
(``recovery.metadata``), so one rule covers every framework that reports the same thing:

- ``reason`` is the broker's reason first: RabbitMQ ``x-first-death-reason`` / ``x-death[].reason``
  (``rejected``, ``expired``, ``maxlen``, ``delivery_limit``), SQS ``maxReceiveCount exceeded``;
  else "exception" when a framework recorded one.
- ``error_class`` / ``error_message`` come from Spring Kafka ``kafka_dlt-exception-fqcn`` /
  ``-message``, Kafka Connect ``__connect.errors.exception.class.name`` / ``.message``,
  MassTransit ``MT-Fault-ExceptionType`` / ``MT-Fault-Message``, NServiceBus
  ``NServiceBus.ExceptionInfo.ExceptionType`` / ``.Message``, Spring AMQP / Cloud Stream
  ``x-exception-class`` / ``x-exception-message``, or a DLQ's own header mapping.
  Wrappers (Spring's ListenerExecutionFailedException) carry the cause in the message
  ("nested exception is ..."), hence a message rule next to each class rule.

Order matters: expiry and decoding first (a letter that cannot be read is poison whatever else
it says), then schema, then transient trouble, then business refusals. A letter no rule
matches is unknown/hold (``rules.DEFAULT_OUTCOME``). Replay is only ever suggested for failures
of the environment, never for the message's own content.
"""

from __future__ import annotations

from typing import Any

from recovery.models import Category, Disposition

C, D = Category, Disposition

_TIMEOUT_CLASS = r"(?i)(timeout|timedout)"
_TIMEOUT_TEXT = r"(?i)(timed? ?out|deadline.exceeded|took too long to respond)"
_CONNECTION_CLASS = (
    r"(?i)(ConnectionRefused|ConnectionReset|ConnectionAborted|ConnectionError|ConnectException|NoRouteToHost"
    r"|UnknownHost|BrokenPipe|SocketException|ClosedChannelException|HttpRequestException|RemoteDisconnected"
    r"|NetworkError|EOFError)"
)
_CONNECTION_TEXT = (
    r"(?i)(connection (was )?(refused|reset|aborted|closed|lost)|ECONNREFUSED|ECONNRESET|EPIPE|EHOSTUNREACH"
    r"|broken pipe|no route to host|name or service not known|temporary failure in name resolution"
    r"|could not connect|failed to connect|network is unreachable)"
)
_THROTTLE_CLASS = (
    r"(?i)(throttl|TooManyRequests|RateLimit|ServiceUnavailable|ProvisionedThroughputExceeded"
    r"|RequestLimitExceeded|SlowDown|ServerBusy|Overloaded)"
)
_THROTTLE_TEXT = (
    r"(?i)((http|status|code)[ :=]*(429|502|503|504)\b|service unavailable|too many requests|bad gateway"
    r"|gateway time-?out|throttl|rate.?limit|slow ?down|server (is )?busy|try again later|overloaded)"
)
_LOCK_CLASS = (
    r"(?i)(deadlock|OptimisticLock|PessimisticLock|CannotAcquireLock|LockTimeout|LockAcquisition"
    r"|StaleObjectState|SerializationFailure|TransientDataAccess|ConcurrencyFailure)"
)
_LOCK_TEXT = r"(?i)(deadlock|lock wait timeout|could not obtain lock|could not serialize access|concurrent update)"
_DECODE_CLASS = (
    r"(?i)(UnicodeDecodeError|JSONDecodeError|JsonParseException|JsonEOFException|JsonReaderException"
    r"|MalformedInputException|CharacterCodingException|DeserializationException|DeserializationError"
    r"|protobuf\.message\.DecodeError)"
)
_DECODE_TEXT = (
    r"(?i)(Expecting (value|property name)|Unexpected (character|token|end of (JSON )?input)|Unrecognized token"
    r"|invalid (json|utf-?8)|can't decode byte|codec can't decode|is not valid JSON|malformed (json|utf-?8|input)"
    r"|Unknown magic byte)"
)
_SCHEMA_CLASS = (
    r"(?i)(ValidationError|ValidationException|ConstraintViolation|MethodArgumentNotValid|SchemaParseException"
    r"|AvroTypeException|AvroRuntimeException|InvalidProtocolBufferException|SerializationException"
    r"|MessageConversionException|connect\.errors\.DataException|SchemaException|MismatchedInputException"
    r"|UnrecognizedPropertyException|InvalidFormatException|ValueInstantiationException)"
)
_SCHEMA_TEXT = (
    r"(?i)(schema (validation|mismatch|incompatib)|does not match (the )?schema|failed to validate"
    r"|is a required property|additional properties are not allowed|is not of type|missing required (field|property)"
    r"|Unrecognized field|Cannot deserialize value of type|Error deserializing Avro|Failed to convert)"
)
_DUPLICATE_CLASS = r"(?i)(Duplicate(Key|Message|Entry|Request|Event)|Idempoten|AlreadyProcessed|UniqueViolation)"
_NOT_FOUND_CLASS = r"(?i)((?<!file)(?<!module)(?<!class)notfound|DoesNotExist|NoResultFound|NoSuchEntity)"
_BUSINESS_CLASS = (
    r"(?i)(InsufficientFunds|InsufficientBalance|IllegalState|InvalidState|InvalidOperation|BusinessRule"
    r"|BusinessException|DomainException|OutOfStock|AlreadyExists|LimitExceeded|Conflict)"
)


def _rule(name: str, description: str, category: str, disposition: str, *conditions: dict) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "category": category,
        "disposition": disposition,
        "conditions": list(conditions),
    }


def _class(pattern: str) -> dict[str, str]:
    return {"field": "error_class", "op": "regex", "value": pattern}


def _message(pattern: str) -> dict[str, str]:
    return {"field": "error_message", "op": "regex", "value": pattern}


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    _rule(
        "Message TTL expired",
        "RabbitMQ dead-lettered the message because its TTL ran out (x-death reason 'expired'): nobody "
        "failed on it, it is stale. Replaying stale events is rarely right.",
        C.EXPIRED, D.DISCARD,
        {"field": "reason", "op": "eq", "value": "expired"},
    ),
    _rule(
        "Queue overflow",
        "RabbitMQ dropped the message because its queue was full (x-death reason 'maxlen'): it was never "
        "processed. Replay once the consumer has caught up.",
        C.TRANSIENT, D.REPLAY,
        {"field": "reason", "op": "eq", "value": "maxlen"},
    ),
    _rule("Decode error", "The consumer could not decode the bytes (UTF-8, JSON, protobuf).",
          C.POISON, D.HOLD, _class(_DECODE_CLASS)),
    _rule("Decode error (message)", "The error message says the body could not be decoded.",
          C.POISON, D.HOLD, _message(_DECODE_TEXT)),
    _rule(
        "JSON declared, body is not JSON",
        "The content type says JSON but the body does not parse: replaying the same bytes fails the same way.",
        C.POISON, D.HOLD,
        {"field": "content_type", "op": "regex", "value": r"(?i)json"},
        {"field": "body", "op": "not_json"},
    ),
    _rule(
        "Text declared, body is not UTF-8",
        "The content type says text but the body is not UTF-8.",
        C.POISON, D.HOLD,
        {"field": "content_type", "op": "regex", "value": r"(?i)^(text/|application/(json|xml))"},
        {"field": "body", "op": "not_utf8"},
    ),
    _rule(
        "Schema or validation error",
        "The message does not fit the consumer's schema (JSON Schema, Avro, Protobuf, Bean Validation, Jackson, "
        "Spring message conversion, Kafka Connect DataException). Fix the producer or the schema, then replay.",
        C.SCHEMA, D.HOLD, _class(_SCHEMA_CLASS),
    ),
    _rule("Schema or validation error (message)", "The error message describes a schema or validation failure.",
          C.SCHEMA, D.HOLD, _message(_SCHEMA_TEXT)),
    _rule("Timeout", "A dependency did not answer in time.", C.TRANSIENT, D.REPLAY, _class(_TIMEOUT_CLASS)),
    _rule("Timeout (message)", "The error message reports a timeout.", C.TRANSIENT, D.REPLAY, _message(_TIMEOUT_TEXT)),
    _rule("Connection refused or reset", "A dependency was unreachable.",
          C.TRANSIENT, D.REPLAY, _class(_CONNECTION_CLASS)),
    _rule("Connection refused or reset (message)", "The error message reports a network failure.",
          C.TRANSIENT, D.REPLAY, _message(_CONNECTION_TEXT)),
    _rule("Throttled or unavailable", "A dependency refused the load (HTTP 429/503, throttling).",
          C.TRANSIENT, D.REPLAY, _class(_THROTTLE_CLASS)),
    _rule("Throttled or unavailable (message)", "The error message reports HTTP 429/502/503/504 or throttling.",
          C.TRANSIENT, D.REPLAY, _message(_THROTTLE_TEXT)),
    _rule("Lock conflict", "A deadlock or optimistic-lock conflict: retrying usually succeeds.",
          C.TRANSIENT, D.REPLAY, _class(_LOCK_CLASS)),
    _rule("Lock conflict (message)", "The error message reports a deadlock or lock timeout.",
          C.TRANSIENT, D.REPLAY, _message(_LOCK_TEXT)),
    _rule("Duplicate delivery", "The consumer saw this message's effect already (duplicate key, idempotency).",
          C.DUPLICATE, D.HOLD, _class(_DUPLICATE_CLASS)),
    _rule("Entity not found", "The message refers to something that does not exist (yet): check ordering.",
          C.BUSINESS, D.HOLD, _class(_NOT_FOUND_CLASS)),
    _rule("Business rule refused", "The domain refused the operation (insufficient funds, illegal state, ...).",
          C.BUSINESS, D.HOLD, _class(_BUSINESS_CLASS)),
    _rule(
        "Retries exhausted, no error recorded",
        "The consumer gave up (rejected, delivery limit, SQS maxReceiveCount) without recording why: look "
        "in the consumer's logs at the letter's failure time before replaying.",
        C.UNKNOWN, D.HOLD,
        {"field": "reason", "op": "regex", "value": r"(?i)^(rejected|delivery_limit|maxReceiveCount exceeded)$"},
        {"field": "error_class", "op": "regex", "value": r"^$"},
    ),
)  # fmt: skip
