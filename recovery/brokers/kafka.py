"""Kafka adapter (confluent-kafka). The only module that imports confluent_kafka."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from recovery.brokers.base import BrokerError, Ping
from recovery.brokers.credentials import resolve_credentials
from recovery.brokers.timing import stopwatch

if TYPE_CHECKING:
    from recovery.models import Broker

# Client options an operator may set in Broker.options; secrets come only from credentials_ref.
_ALLOWED_OPTIONS = {"security.protocol", "sasl.mechanisms", "ssl.ca.location", "client.id"}


class KafkaAdapter:
    def __init__(self, broker: Broker, *, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout

    def client_config(self) -> dict[str, Any]:
        if not self.broker.endpoint:
            raise BrokerError("a Kafka broker needs bootstrap servers (host:port[,host:port])", permanent=True)
        config: dict[str, Any] = {
            "bootstrap.servers": self.broker.endpoint,
            "socket.timeout.ms": int(self.timeout * 1000),
            "socket.connection.setup.timeout.ms": int(self.timeout * 1000),
            # librdkafka would otherwise log every reconnect attempt of a down broker to stderr.
            "log_level": 0,
            "error_cb": lambda _err: None,
        }
        config.update({k: v for k, v in (self.broker.options or {}).items() if k in _ALLOWED_OPTIONS})
        creds = resolve_credentials(self.broker.credentials_ref, ("username", "password"))
        if creds:
            config["sasl.username"] = creds.get("username", "")
            config["sasl.password"] = creds.get("password", "")
        return config

    def ping(self) -> Ping:
        admin = AdminClient(self.client_config())
        try:
            with stopwatch() as elapsed:
                metadata = admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot reach {self.broker.endpoint}: {exc.args[0].str()}") from None
        return Ping(
            latency_ms=elapsed[0],
            detail=f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)",
        )

    def close(self) -> None:
        """Nothing is held between calls yet."""
