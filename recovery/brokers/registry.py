"""Maps a broker kind to its adapter class by dotted path, so that a client library (boto3,
pika, confluent_kafka) is imported only when a broker of that kind is used."""

from __future__ import annotations

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
