"""A real Celery application whose one task rejects every message without requeueing it, as a
consumer that gives up does: RabbitMQ then dead-letters the message to the queue's dead-letter
exchange and writes x-death. The test starts a real worker of it in a subprocess
(``celery -A tests.recovery.replay.celery_reject_app worker``); the broker URL and the queue names
come from the environment the test sets (CELERY_REJECT_BROKER, CELERY_REJECT_QUEUE, CELERY_REJECT_DLQ)."""

from __future__ import annotations

import os

from celery import Celery
from celery.exceptions import Reject
from kombu import Exchange, Queue

TASK = "shop.charge"


def make_app(broker_url: str, queue: str, dlq: str) -> Celery:
    app = Celery("reject-app", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[
            Queue(
                queue,
                Exchange(queue, type="direct"),
                routing_key=queue,
                queue_arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq},
            )
        ],
        task_default_queue=queue,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name=TASK)
    def charge(order: int) -> None:
        raise Reject(f"payment service refused order {order}", requeue=False)

    return app


app = make_app(
    os.environ.get("CELERY_REJECT_BROKER", "amqp://localhost//"),
    os.environ.get("CELERY_REJECT_QUEUE", "shop"),
    os.environ.get("CELERY_REJECT_DLQ", "shop.dlq"),
)
