"""Amazon SQS adapter (boto3). The only module that imports boto3/botocore."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from recovery.brokers.base import BrokerError, Ping
from recovery.brokers.credentials import resolve_credentials
from recovery.brokers.timing import stopwatch

if TYPE_CHECKING:
    from recovery.models import Broker


class SqsAdapter:
    def __init__(self, broker: Broker, *, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            creds = resolve_credentials(
                self.broker.credentials_ref, ("access_key_id", "secret_access_key", "session_token")
            )
            self._client = boto3.session.Session().client(
                "sqs",
                endpoint_url=self.broker.endpoint or None,
                region_name=(self.broker.options or {}).get("region", "us-east-1"),
                aws_access_key_id=creds.get("access_key_id"),
                aws_secret_access_key=creds.get("secret_access_key"),
                aws_session_token=creds.get("session_token"),
                config=Config(
                    connect_timeout=self.timeout,
                    read_timeout=self.timeout,
                    retries={"max_attempts": 1, "mode": "standard"},
                ),
            )
        return self._client

    def ping(self) -> Ping:
        try:
            with stopwatch() as elapsed:
                response = self.client.list_queues(MaxResults=1)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            raise BrokerError(
                f"{code}: {error.get('Message', exc)}",
                permanent=code in {"AccessDenied", "InvalidClientTokenId", "SignatureDoesNotMatch"},
            ) from None
        except BotoCoreError as exc:
            raise BrokerError(str(exc)) from None
        where = self.broker.endpoint or "AWS"
        queues = "queues listed" if response.get("QueueUrls") else "no queues yet"
        return Ping(latency_ms=elapsed[0], detail=f"SQS at {where}: {queues}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
