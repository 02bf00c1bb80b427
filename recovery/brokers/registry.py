"""Maps a broker kind to its adapter class by dotted path, so that a client library (boto3,
pika, confluent_kafka) is imported only when a broker of that kind is used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

from recovery.models.brokers import BrokerKind

if TYPE_CHECKING:
    from recovery.brokers.base import BrokerAdapter
    from recovery.models import Broker

ADAPTERS: dict[str, str] = {
    BrokerKind.SQS: "recovery.brokers.sqs.SqsAdapter",
    BrokerKind.RABBITMQ: "recovery.brokers.rabbitmq.RabbitMqAdapter",
    BrokerKind.KAFKA: "recovery.brokers.kafka.KafkaAdapter",
}


def adapter_for(broker: Broker, *, timeout: float = 5.0) -> BrokerAdapter:
    adapter_class = import_string(ADAPTERS[broker.kind])
    return adapter_class(broker, timeout=timeout)


@contextmanager
def broker_session(broker: Broker, *, timeout: float = 5.0) -> Iterator[BrokerAdapter]:
    """An adapter for the length of a block, closed afterwards whatever happens (messages
    received and not removed go back to the broker)."""
    adapter = adapter_for(broker, timeout=timeout)
    try:
        yield adapter
    finally:
        adapter.close()
