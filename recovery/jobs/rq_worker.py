"""RQ classes that run registered jobs only (settings.RQ names them for django-rq).

An RQ job normally names a function by import path and carries pickled arguments; whoever can
write to Redis could make a worker import and call anything, or unpickle anything. Here a job's
function name is a registered job name (recovery.jobs.registry), its data is JSON, and the worker
refuses the rest: a foreign path fails the job with the refusal logged, and the worker goes on.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import DequeueStrategy, SimpleWorker, Worker

from recovery.jobs.registry import received


class RegisteredJob(Job):
    """An RQ job whose function is looked up in the registry by name, never imported by path."""

    @property
    def func(self) -> Any:
        return received(self.func_name).func


class _RegisteredJobsOnly:
    """JSON job data and ``RegisteredJob``, whatever the command line says (django-rq's
    ``rqworker`` passes the pickle serializer by default). A worker given several queues serves
    them in turn (RQ's round robin) rather than in strict priority, so a busy queue (the periodic
    one ticks every few seconds) never starves the others; production runs a worker per queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = RegisteredJob
        super().__init__(*args, **kwargs)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs.setdefault("dequeue_strategy", DequeueStrategy.ROUND_ROBIN)
        return super().work(*args, **kwargs)


class RegisteredJobWorker(_RegisteredJobsOnly, Worker):
    """The RQ worker of this project (settings.RQ["WORKER_CLASS"]): a work horse per job."""


class RegisteredJobSimpleWorker(_RegisteredJobsOnly, SimpleWorker):
    """The same in one process, without forking (tests, and `rqworker --worker-class` where a
    fork per job is not wanted)."""
