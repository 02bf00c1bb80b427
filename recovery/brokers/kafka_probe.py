"""Reading the first record of many Kafka topics, in a child process (issue 15, discovery).

Kafka Streams and share groups write dead letters to a topic of any name; only the records'
headers (``__streams.errors.*``, ``__dlq.errors.*``) tell. Discover reads the first record of up
to 200 topics to find them. That read runs in a child process because librdkafka (2.16, with the
local Kafka-compatible broker) crashes the whole process with SIGSEGV when a topic it fetches
from is deleted while it reads: the Fetch answer names the topic by an id the client no longer
knows, and its metadata refresh then compares a NULL topic name. A web worker must not die
because someone deleted a topic while an admin looked at the Discover page; a child that dies
costs one more attempt and, failing that, only the header-found candidates (logged).

The child gets the client configuration (which may hold SASL credentials) on stdin, never in
its arguments or environment, and answers with JSON on stdout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from recovery.faults import fault_point

log = logging.getLogger(__name__)

# Header prefixes of dead-letter writers that may use any topic name, and the header naming the
# record's source topic (prefix + "topic").
DEAD_LETTER_HEADER_PREFIXES = ("__streams.errors.", "__dlq.errors.")
ATTEMPTS = 2  # a crash is a race with a topic deletion: one more try, then give up
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where `python -m recovery...` finds the package


def dead_letter_topics(config: dict[str, Any], names: list[str], timeout: float) -> dict[str, str]:
    """{topic: the source topic its first record names} for those of ``names`` whose first record
    (partition 0) carries a dead-letter writer's headers. Runs in a child process (see the module
    docstring); a child that crashes twice, or outlives the timeout, yields {} and a warning."""
    if not names:
        return {}
    request = json.dumps({"config": _plain(config), "names": names, "timeout": timeout})
    for attempt in range(1, ATTEMPTS + 1):
        try:
            child = subprocess.run(
                [sys.executable, "-m", "recovery.brokers.kafka_probe"],
                input=request.encode(), capture_output=True, timeout=timeout + 15, cwd=_PROJECT_ROOT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            log.warning("kafka.discovery_probe_timeout", extra={"topics": len(names), "attempt": attempt})
            continue
        if child.returncode == 0:
            return json.loads(child.stdout)
        log.warning(
            "kafka.discovery_probe_died",
            extra={"returncode": child.returncode, "attempt": attempt, "stderr": child.stderr.decode()[-500:]},
        )
    return {}


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """The client configuration without callbacks (they cannot cross a process boundary)."""
    return {key: value for key, value in config.items() if not callable(value)}


def read_first_records(config: dict[str, Any], names: list[str], timeout: float) -> dict[str, str]:
    """In the child: one consumer reads partition 0 of every topic from the start, until each
    answered or ``timeout`` passed, and keeps those whose first record has the headers."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    consumer = Consumer({**config, "group.id": "dlq-console.discovery", "enable.auto.commit": False})
    found: dict[str, str] = {}
    try:
        consumer.assign([TopicPartition(name, 0, OFFSET_BEGINNING) for name in names])
        fault_point("kafka.discovery_probe")  # assigned, reading: where a deleted topic crashes librdkafka
        waiting, deadline = set(names), time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.2):
                if msg.error() or msg.topic() not in waiting:
                    continue
                waiting.discard(msg.topic())
                source = _source_topic(dict(msg.headers() or []))
                if source is not None:
                    found[msg.topic()] = source
    finally:
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.close()
    return found


def _source_topic(headers: dict[str, bytes | None]) -> str | None:
    """The source topic a dead-letter writer's headers name ("" when it names none), or None
    when these are not a dead-letter writer's headers."""
    for prefix in DEAD_LETTER_HEADER_PREFIXES:
        if any(name.startswith(prefix) for name in headers):
            source = headers.get(prefix + "topic") or b""
            return source.decode("utf-8", "replace") if isinstance(source, bytes) else ""
    return None


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    found = read_first_records(request["config"], request["names"], request["timeout"])
    sys.stdout.write(json.dumps(found))


if __name__ == "__main__":
    main()
