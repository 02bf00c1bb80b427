"""How each runtime reports a consumer failure: Python tracebacks, Spring Kafka, Kafka Connect.

The demo consumers decide *that* a message fails (:mod:`scripts.demo.apps`); this module writes
the error class, message and stack the way the user's real runtime would, so that the console's
metadata normalisation and fingerprints meet realistic text. Stacks of one kind share their frames,
so the same failure groups under one fingerprint while ids in the messages differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from scripts.demo.apps import AppFailure

SITE = "/usr/local/lib/python3.11/site-packages"


@dataclass(frozen=True)
class PythonError:
    """A Python exception as an app writes it into x-exception-* headers."""

    error_class: str
    message: str
    stack: str
    retries: int


@dataclass(frozen=True)
class JavaError:
    """A Java exception as Spring Kafka writes it into kafka_dlt-exception-* headers."""

    fqcn: str
    cause_fqcn: str
    message: str
    stack: str


@dataclass(frozen=True)
class ConnectError:
    """A Kafka Connect error as errors.deadletterqueue.context.headers.enable writes it."""

    stage: str
    class_name: str
    exception_class: str
    message: str
    stack: str


Frame = tuple[str, int, str, str]  # path, line, function, source line


def _py_frames(frames: list[Frame]) -> str:
    return "".join(f'  File "{path}", line {line}, in {func}\n    {code}\n' for path, line, func, code in frames)


_REQUESTS_FRAMES = [
    (f"{SITE}/requests/sessions.py", 637, "post", 'return self.request("POST", url, data=data, json=json, **kwargs)'),
    (f"{SITE}/requests/sessions.py", 589, "request", "resp = self.send(prep, **send_kwargs)"),
    (f"{SITE}/requests/sessions.py", 703, "send", "r = adapter.send(request, **kwargs)"),
    (f"{SITE}/requests/adapters.py", 713, "send", "raise ReadTimeout(e, request=request)"),
]


def _python_frames(kind: str, app: str) -> tuple[str, list[Frame], int]:
    """Error class, frames below the consumer's and retries made (transient errors only) for ``kind``."""
    noun = app.rstrip("s")
    handlers = f"/app/{app}/handlers.py"
    if kind == "timeout":
        client = "gateway" if app == "payments" else "inventory"
        return (
            "requests.exceptions.ReadTimeout",
            [
                (handlers, 41, f"handle_{noun}", f"result = {client}.reserve(event, timeout=10)"),
                (f"/app/{app}/{client}.py", 67, "reserve", "response = self.session.post(self.url, json=payload)"),
                *_REQUESTS_FRAMES,
            ],
            3,
        )
    if kind == "schema":
        return (
            "jsonschema.exceptions.ValidationError",
            [
                (handlers, 29, f"handle_{noun}", f'schemas.validate(event, "{noun}-event.v3.json")'),
                (f"/app/{app}/schemas.py", 18, "validate", "validator.validate(document)"),
                (f"{SITE}/jsonschema/validators.py", 451, "validate", "raise error"),
            ],
            0,
        )
    if kind == "business":
        error_class = (
            "payments.errors.PaymentAlreadyCaptured" if app == "payments" else "orders.errors.OrderAlreadyShipped"
        )
        short = error_class.rsplit(".", 1)[1]
        return (
            error_class,
            [
                (handlers, 52, f"handle_{noun}", f"apply_{noun}_event(record, event)"),
                (handlers, 77, f"apply_{noun}_event", f'raise {short}(f"{noun} {{record.id}} was already ...")'),
            ],
            0,
        )
    if kind == "not_utf8":
        return "UnicodeDecodeError", [(handlers, 22, f"handle_{noun}", 'event = json.loads(body.decode("utf-8"))')], 0
    error_class = "RecursionError" if kind == "too_deep" else "ValueError"
    return error_class, [(handlers, 22, f"handle_{noun}", "event = json.loads(body)")], 0


def python_error(failure: AppFailure, *, app: str) -> PythonError:
    """The exception a Python service (``app``: "payments" or "orders") logs for ``failure``."""
    noun = app.rstrip("s")
    error_class, frames, retries = _python_frames(failure.kind, app)
    consumer = (f"/app/{app}/consumer.py", 88, "on_message", f"handle_{noun}(body, properties.headers)")
    stack = _traceback([consumer, *frames], error_class, failure.message)
    if failure.kind == "schema":
        stack += (
            "\n\nFailed validating 'required' in schema:\n"
            f"    {{'$id': 'https://schemas.acme.example/{noun}-event.v3.json', 'type': 'object', "
            "'required': ['event_id', 'event_type', 'amount', 'currency']}\n"
        )
    return PythonError(error_class, failure.message, stack, retries)


def _traceback(frames: list[Frame], error_class: str, message: str) -> str:
    return f"Traceback (most recent call last):\n{_py_frames(frames)}{error_class}: {message}"


def _java_frames(frames: list[str]) -> str:
    return "".join(f"\tat {frame}\n" for frame in frames)


_LISTENER = (
    "public void com.acme.orders.OrderEventsListener.onOrderEvent("
    "org.apache.kafka.clients.consumer.ConsumerRecord<java.lang.String, java.lang.String>)"
)
_CONTAINER = "org.springframework.kafka.listener.KafkaMessageListenerContainer$ListenerConsumer"
_SPRING_FRAMES = [
    f"{_CONTAINER}.decorateException(KafkaMessageListenerContainer.java:2923)",
    f"{_CONTAINER}.doInvokeOnMessage(KafkaMessageListenerContainer.java:2864)",
    f"{_CONTAINER}.invokeOnMessage(KafkaMessageListenerContainer.java:2811)",
    f"{_CONTAINER}.doInvokeRecordListener(KafkaMessageListenerContainer.java:2678)",
    f"{_CONTAINER}.doInvokeWithRecords(KafkaMessageListenerContainer.java:2540)",
    f"{_CONTAINER}.invokeRecordListener(KafkaMessageListenerContainer.java:2430)",
    f"{_CONTAINER}.invokeListener(KafkaMessageListenerContainer.java:2085)",
    f"{_CONTAINER}.pollAndInvoke(KafkaMessageListenerContainer.java:1461)",
    f"{_CONTAINER}.run(KafkaMessageListenerContainer.java:1352)",
    "java.base/java.util.concurrent.CompletableFuture$AsyncRun.run(CompletableFuture.java:1804)",
    "java.base/java.lang.Thread.run(Thread.java:840)",
]
_INVOKE_FRAMES = [
    "java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
    "java.base/java.lang.reflect.Method.invoke(Method.java:580)",
    "org.springframework.messaging.handler.invocation.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:169)",
    "org.springframework.messaging.handler.invocation.InvocableHandlerMethod.invoke(InvocableHandlerMethod.java:119)",
    "org.springframework.kafka.listener.adapter.HandlerAdapter.invoke(HandlerAdapter.java:56)",
    "org.springframework.kafka.listener.adapter.MessagingMessageListenerAdapter.invokeHandler("
    "MessagingMessageListenerAdapter.java:375)",
]
_JACKSON_READ = [
    "com.fasterxml.jackson.databind.ObjectMapper._readMapAndClose(ObjectMapper.java:4899)",
    "com.fasterxml.jackson.databind.ObjectMapper.readValue(ObjectMapper.java:3846)",
    "com.acme.orders.OrderEventsListener.onOrderEvent(OrderEventsListener.java:38)",
]
_REDACTED = "[Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: 1, column: {column}]"


def _spring_cause(failure: AppFailure, body_length: int) -> tuple[str, str, list[str]]:
    """The listener's own exception for ``failure``: class, message, top frames."""
    context = failure.context
    kind = failure.kind
    listener = "com.acme.orders.OrderEventsListener.onOrderEvent(OrderEventsListener.java:41)"
    if kind == "timeout":
        return (
            "java.net.SocketTimeoutException",
            "Read timed out",
            [
                "java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)",
                "java.base/sun.nio.ch.NioSocketImpl.implRead(NioSocketImpl.java:314)",
                "java.base/sun.nio.ch.NioSocketImpl.read(NioSocketImpl.java:355)",
                "java.base/java.net.Socket$SocketInputStream.read(Socket.java:966)",
                "java.base/java.io.BufferedInputStream.fill(BufferedInputStream.java:244)",
                "java.base/sun.net.www.http.HttpClient.parseHTTPHeader(HttpClient.java:791)",
                "java.base/sun.net.www.protocol.http.HttpURLConnection.getInputStream0(HttpURLConnection.java:1688)",
                "com.acme.orders.inventory.InventoryClient.reserve(InventoryClient.java:57)",
                "com.acme.orders.OrderService.place(OrderService.java:112)",
                listener,
            ],
        )
    if kind == "schema":
        message = (
            f"Missing required creator property '{context['field']}' (index 7)\n at "
            + _REDACTED.format(column=body_length)
            + ' (through reference chain: com.acme.orders.OrderEvent["amount"])'
        )
        frames = [
            "com.fasterxml.jackson.databind.exc.MismatchedInputException.from(MismatchedInputException.java:63)",
            "com.fasterxml.jackson.databind.DeserializationContext.reportInputMismatch(DeserializationContext.java:1781)",
            "com.fasterxml.jackson.databind.deser.impl.PropertyValueBuffer._findMissing(PropertyValueBuffer.java:192)",
            *_JACKSON_READ,
        ]
        return "com.fasterxml.jackson.databind.exc.MismatchedInputException", message, frames
    if kind == "business":
        return (
            "com.acme.orders.OrderAlreadyShippedException",
            f"Order {context['order_id']} was already shipped",
            ["com.acme.orders.OrderService.cancel(OrderService.java:148)", listener],
        )
    if kind == "celery_task":
        return (
            "com.acme.orders.UnknownTaskException",
            f"no handler for task '{context['task']}'",
            ["com.acme.orders.TaskDispatcher.dispatch(TaskDispatcher.java:33)", listener],
        )
    if kind == "not_utf8":
        message = f"Invalid UTF-8 middle byte {context['next_byte']}\n at " + _REDACTED.format(
            column=int(context["position"]) + 1
        )
        frames = [
            "com.fasterxml.jackson.core.JsonParser._constructError(JsonParser.java:2481)",
            "com.fasterxml.jackson.core.json.UTF8StreamJsonParser._reportInvalidOther(UTF8StreamJsonParser.java:3727)",
            "com.fasterxml.jackson.core.json.UTF8StreamJsonParser._finishString2(UTF8StreamJsonParser.java:2562)",
            *_JACKSON_READ,
        ]
        return "com.fasterxml.jackson.core.JsonParseException", message, frames
    if kind == "too_deep":
        return (
            "com.fasterxml.jackson.core.exc.StreamConstraintsException",
            "Document nesting depth (1001) exceeds the maximum allowed (1000, from "
            "`StreamReadConstraints.getMaxNestingDepth()`)",
            [
                "com.fasterxml.jackson.core.StreamReadConstraints._constructException(StreamReadConstraints.java:637)",
                "com.fasterxml.jackson.core.StreamReadConstraints.validateNestingDepth(StreamReadConstraints.java:349)",
                *_JACKSON_READ,
            ],
        )
    if kind == "too_large":
        return (
            "com.acme.orders.PayloadTooLargeException",
            failure.message,
            ["com.acme.orders.PayloadGuard.check(PayloadGuard.java:24)", listener],
        )
    if kind == "hostile_header":
        return (
            "com.acme.orders.InvalidCustomerNoteException",
            failure.message,
            ["com.acme.orders.CustomerNotes.sanitize(CustomerNotes.java:19)", listener],
        )
    return "java.lang.IllegalStateException", failure.message, [listener]


def spring_error(failure: AppFailure, *, body_length: int) -> JavaError:
    """What Spring Kafka's DeadLetterPublishingRecoverer records for ``failure``."""
    cause_class, cause_message, cause_frames = _spring_cause(failure, body_length)
    message = f"Listener method '{_LISTENER}' threw exception; nested exception is {cause_class}: {cause_message}"
    fqcn = "org.springframework.kafka.listener.ListenerExecutionFailedException"
    stack = (
        f"{fqcn}: {message}\n"
        + _java_frames(_SPRING_FRAMES)
        + f"Caused by: {cause_class}: {cause_message}\n"
        + _java_frames([*cause_frames, *_INVOKE_FRAMES])
        + "\t... 10 common frames omitted\n"
    )
    return JavaError(fqcn=fqcn, cause_fqcn=cause_class, message=message, stack=stack)


_WORKER = "org.apache.kafka.connect.runtime.WorkerSinkTask"
_TOLERANCE = "org.apache.kafka.connect.runtime.errors.RetryWithToleranceOperator"
_WORKER_TAIL = [
    f"{_WORKER}.poll(WorkerSinkTask.java:347)",
    f"{_WORKER}.iteration(WorkerSinkTask.java:247)",
    f"{_WORKER}.execute(WorkerSinkTask.java:216)",
    "org.apache.kafka.connect.runtime.WorkerTask.doRun(WorkerTask.java:226)",
    "org.apache.kafka.connect.runtime.WorkerTask.run(WorkerTask.java:281)",
    "java.base/java.util.concurrent.Executors$RunnableAdapter.call(Executors.java:539)",
    "java.base/java.util.concurrent.FutureTask.run(FutureTask.java:264)",
    "java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1136)",
    "java.base/java.util.concurrent.ThreadPoolExecutor$Worker.run(ThreadPoolExecutor.java:635)",
    "java.base/java.lang.Thread.run(Thread.java:840)",
]
_CONVERT_FRAMES = [
    "org.apache.kafka.connect.json.JsonConverter.toConnectData(JsonConverter.java:333)",
    "org.apache.kafka.connect.storage.Converter.toConnectData(Converter.java:91)",
    f"{_WORKER}.lambda$convertAndTransformRecord$5(WorkerSinkTask.java:546)",
    f"{_TOLERANCE}.execAndRetry(RetryWithToleranceOperator.java:180)",
    f"{_TOLERANCE}.execAndHandleError(RetryWithToleranceOperator.java:214)",
    f"{_TOLERANCE}.execute(RetryWithToleranceOperator.java:156)",
    f"{_WORKER}.convertAndTransformRecord(WorkerSinkTask.java:546)",
    f"{_WORKER}.convertMessages(WorkerSinkTask.java:521)",
    *_WORKER_TAIL,
]
_PUT_FRAMES = [
    "org.postgresql.jdbc.BatchResultHandler.handleError(BatchResultHandler.java:165)",
    "org.postgresql.core.v3.QueryExecutorImpl.processResults(QueryExecutorImpl.java:2402)",
    "org.postgresql.jdbc.PgStatement.internalExecuteBatch(PgStatement.java:898)",
    "org.postgresql.jdbc.PgPreparedStatement.executeBatch(PgPreparedStatement.java:1778)",
    "io.confluent.connect.jdbc.sink.BufferedRecords.executeUpdates(BufferedRecords.java:196)",
    "io.confluent.connect.jdbc.sink.BufferedRecords.flush(BufferedRecords.java:186)",
    "io.confluent.connect.jdbc.sink.JdbcDbWriter.write(JdbcDbWriter.java:80)",
    "io.confluent.connect.jdbc.sink.JdbcSinkTask.put(JdbcSinkTask.java:90)",
    f"{_WORKER}.deliverMessages(WorkerSinkTask.java:593)",
    *_WORKER_TAIL,
]
_INSERT = 'Batch entry 0 INSERT INTO "orders" ("order_id","event_id","event_type","customer_id","amount") VALUES'


def connect_error(failure: AppFailure) -> ConnectError:
    """What a Kafka Connect JDBC sink reports to its dead-letter queue for ``failure``."""
    kind = failure.kind
    context = failure.context
    if kind in ("not_utf8", "too_deep"):
        if kind == "not_utf8":
            cause = f"com.fasterxml.jackson.core.JsonParseException: Invalid UTF-8 middle byte {context['next_byte']}"
        else:
            cause = (
                "com.fasterxml.jackson.core.exc.StreamConstraintsException: Document nesting depth (1001) exceeds "
                "the maximum allowed (1000, from `StreamReadConstraints.getMaxNestingDepth()`)"
            )
        message = "Converting byte[] to Kafka Connect data failed due to serialization error: "
        stack = (
            f"org.apache.kafka.connect.errors.DataException: {message}\n"
            + _java_frames(_CONVERT_FRAMES)
            + f"Caused by: org.apache.kafka.common.errors.SerializationException: {cause}\n"
            + _java_frames(["org.apache.kafka.connect.json.JsonDeserializer.deserialize(JsonDeserializer.java:66)"])
            + "\t... 17 more\n"
        )
        return ConnectError(
            stage="VALUE_CONVERTER",
            class_name="org.apache.kafka.connect.json.JsonConverter",
            exception_class="org.apache.kafka.connect.errors.DataException",
            message=message,
            stack=stack,
        )
    if kind == "celery_task":
        fields = ", ".join(
            f"SinkRecordField{{schema=Schema{{STRING}}, name='{name}', isPrimaryKey=false}}"
            for name in context["fields"]
        )
        exception_class = "io.confluent.connect.jdbc.sink.TableAlterOrCreateException"
        message = f'Table "orders" is missing fields ([{fields}]) and auto-evolution is disabled'
        frames = [
            "io.confluent.connect.jdbc.sink.DbStructure.amendIfNecessary(DbStructure.java:182)",
            "io.confluent.connect.jdbc.sink.DbStructure.createOrAmendIfNecessary(DbStructure.java:83)",
            *_PUT_FRAMES[4:],
        ]
    else:
        exception_class = "java.sql.BatchUpdateException"
        if kind == "schema":
            reason = 'ERROR: null value in column "amount" of relation "orders" violates not-null constraint'
        else:
            reason = "ERROR: value too long for type character varying(65535)"
        message = (
            f"{_INSERT} (?,?,?,?,?) was aborted: {reason}  Call getNextException to see other errors in the batch."
        )
        frames = _PUT_FRAMES
    return ConnectError(
        stage="TASK_PUT",
        class_name="io.confluent.connect.jdbc.sink.JdbcSinkTask",
        exception_class=exception_class,
        message=message,
        stack=f"{exception_class}: {message}\n" + _java_frames(frames),
    )
