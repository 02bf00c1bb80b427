"""RabbitMQ adapter (pika). The only module that imports pika."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pika
import pika.exceptions

from recovery.brokers.base import BrokerError, Ping
from recovery.brokers.credentials import resolve_credentials
from recovery.brokers.timing import stopwatch

if TYPE_CHECKING:
    from recovery.models import Broker


class RabbitMqAdapter:
    def __init__(self, broker: Broker, *, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout

    def connection_parameters(self) -> pika.URLParameters:
        try:
            params = pika.URLParameters(self.broker.endpoint or "amqp://127.0.0.1:5672/%2F")
        except Exception as exc:  # pika raises assorted types for a malformed URL
            raise BrokerError(f"invalid AMQP URL: {exc}", permanent=True) from None
        creds = resolve_credentials(self.broker.credentials_ref, ("username", "password"))
        if creds:
            params.credentials = pika.PlainCredentials(creds.get("username", "guest"), creds.get("password", ""))
        params.connection_attempts = 1
        params.retry_delay = 0
        params.socket_timeout = self.timeout
        params.stack_timeout = self.timeout
        params.blocked_connection_timeout = self.timeout
        return params

    def ping(self) -> Ping:
        params = self.connection_parameters()
        try:
            with stopwatch() as elapsed:
                connection = pika.BlockingConnection(params)
                server = connection._impl.server_properties  # noqa: SLF001 - pika exposes no public accessor
                connection.close()
        except pika.exceptions.ProbableAuthenticationError as exc:
            raise BrokerError(f"authentication refused: {exc}", permanent=True) from None
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(f"cannot connect to {params.host}:{params.port}: {exc!r}") from None
        except OSError as exc:
            raise BrokerError(f"cannot connect to {params.host}:{params.port}: {exc}") from None
        version = server.get("version", b"")
        version = version.decode() if isinstance(version, bytes) else str(version)
        return Ping(latency_ms=elapsed[0], detail=f"RabbitMQ {version}".strip())

    def close(self) -> None:
        """Nothing is held between calls yet."""
