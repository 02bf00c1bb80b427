"""Fingerprints group the same failure whatever its ids, and tell different failures apart."""

from __future__ import annotations

import pytest

from recovery.classification.fingerprint import fingerprint, strip_message, top_frames

JAVA_TRACE = """org.springframework.kafka.listener.ListenerExecutionFailedException: Listener failed
\tat com.acme.orders.OrderHandler.lambda$handle${n}(OrderHandler.java:{line})
\tat com.acme.orders.OrderService$$EnhancerBySpringCGLIB$${hex}.charge(<generated>)
\tat java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:{line2})
\tat java.base/java.lang.Thread.run(Thread.java:833)
Caused by: java.net.SocketTimeoutException: Read timed out
\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)
"""

PYTHON_TRACE = """Traceback (most recent call last):
  File "/srv/app/releases/{release}/consumer/handlers.py", line {line}, in handle
    order = load(message)
  File "/srv/app/releases/{release}/consumer/orders.py", line 12, in load
    return json.loads(body)
  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads
    return _default_decoder.decode(s)
  File "/usr/lib/python3.11/json/decoder.py", line {line2}, in decode
    obj, end = self.raw_decode(s, idx=_w(s, 0))
json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)
"""

DOTNET_TRACE = """System.InvalidOperationException: Order {n} cannot be cancelled
   at Acme.Orders.OrderService.Cancel(Guid orderId) in /src/Acme.Orders/OrderService.cs:line {line}
   at Acme.Orders.Handlers.CancelHandler.<Handle>d__{n}.MoveNext() in /src/Acme.Orders/CancelHandler.cs:line 31
--- End of stack trace from previous location ---
   at MassTransit.Middleware.HandlerMessageFilter`1.Send(ConsumeContext`1 context, IPipe`1 next)
"""


def _print(error_class: str, message: str, origin: str = "kafka:orders", stack: str = "") -> str:
    return fingerprint(error_class=error_class, error_message=message, origin=origin, stack_trace=stack).digest


# Each pair is the same failure with different variable parts: same fingerprint.
SAME_FAILURE = [
    (
        "com.acme.OrderNotFoundException",
        "Order 12345 not found for customer 'acme-42'",
        "Order 98 not found for customer 'zeta-industries'",
    ),
    (
        "java.net.SocketTimeoutException",
        "Read timed out after 30000 ms calling http://payments:8080/v1/charges/77",
        "Read timed out after 15000 ms calling http://payments:8080/v1/charges/1234567",
    ),
    (
        "EntityNotFound",
        "Entity 3f2b8c1e-9d4a-4b6e-8f1a-2c3d4e5f6a7b does not exist",
        "Entity 00000000-1111-2222-3333-ABCDEFABCDEF does not exist",
    ),
    ("InsufficientFunds", "User bob@example.com: balance 10.50 < 99.99", "User alice.smith+x@corp.io: balance 0 < 5"),
    (
        "RuntimeError",
        "Failed at 2024-05-01T12:30:45.123Z on worker 0x7ffd5e8c",
        "Failed at 2023-11-30 01:02:03+02:00 on worker 0x1a",
    ),
    ("Throttled", "Rate exceeded at Tue, 14 Nov 2023 08:12:31 GMT", "Rate exceeded at Wed, 1 May 2024 23:00:00 GMT"),
    ("MongoError", "object 5f8d0d55b54764421b7156c3 missing", "object 64a1f2e3d4c5b6a798877665 missing"),
    ("KeyError", 'missing key "customer_id" in payload', "missing key 'tenant' in payload"),
    (
        "psycopg.errors.UniqueViolation",
        'duplicate key value violates unique constraint "orders_pkey" DETAIL: Key (id)=(42) already exists.',
        'duplicate key value violates unique constraint "orders_pkey" DETAIL: Key (id)=(9001) already exists.',
    ),
]


@pytest.mark.parametrize(("error_class", "first", "second"), SAME_FAILURE)
def test_the_same_failure_with_different_ids_has_one_fingerprint(error_class, first, second) -> None:
    assert _print(error_class, first) == _print(error_class, second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("java.net.SocketTimeoutException", "Read timed out"), ("java.net.ConnectException", "Read timed out")),
        (("TimeoutError", "timed out"), ("TimeoutError", "connection refused")),
        (("TimeoutError", "timed out", "kafka:orders"), ("TimeoutError", "timed out", "kafka:payments")),
    ],
    ids=["error-class", "message-words", "origin"],
)
def test_different_failures_have_different_fingerprints(first, second) -> None:
    assert _print(*first) != _print(*second)


@pytest.mark.parametrize(
    ("template", "a", "b"),
    [
        (
            JAVA_TRACE,
            {"n": 0, "line": 42, "hex": "a1b2c3", "line2": 1136},
            {"n": 3, "line": 57, "hex": "9f", "line2": 1144},
        ),
        (
            PYTHON_TRACE,
            {"release": "20240501", "line": 88, "line2": 337},
            {"release": "2024-06-02b", "line": 90, "line2": 340},
        ),
        (DOTNET_TRACE, {"n": 5, "line": 118}, {"n": 7, "line": 121}),
    ],
    ids=["java", "python", "dotnet"],
)
def test_stack_frames_ignore_line_numbers_paths_and_generated_names(template: str, a: dict, b: dict) -> None:
    assert top_frames(template.format(**a)) == top_frames(template.format(**b))
    assert len(top_frames(template.format(**a))) == 3
    assert _print("E", "boom", stack=template.format(**a)) == _print("E", "boom", stack=template.format(**b))


def test_the_innermost_frames_count() -> None:
    assert top_frames(JAVA_TRACE.format(n=0, line=1, hex="ab", line2=2)) == [
        "com.acme.orders.OrderHandler.lambda$handle$<n>",
        "com.acme.orders.OrderService$$.charge",
        "java.util.concurrent.ThreadPoolExecutor.runWorker",
    ]
    assert top_frames(PYTHON_TRACE.format(release="r", line=1, line2=2)) == [
        "json/decoder.py:decode",
        "json/__init__.py:loads",
        "consumer/orders.py:load",
    ]
    assert top_frames(DOTNET_TRACE.format(n=1, line=1))[0] == "Acme.Orders.OrderService.Cancel(Guid orderId)"


def test_a_different_throw_site_is_a_different_failure() -> None:
    other = JAVA_TRACE.replace("OrderHandler.lambda", "RefundHandler.lambda").format(n=0, line=1, hex="a", line2=2)
    same = JAVA_TRACE.format(n=0, line=1, hex="a", line2=2)
    assert _print("E", "boom", stack=same) != _print("E", "boom", stack=other)


@pytest.mark.parametrize(
    ("message", "pattern"),
    [
        ("Order 12345 not found", "Order <n> not found"),
        ("Can't process order \"A1\" for 'B2'", "Can't process order <value> for <value>"),
        ("at 12:30:45.123 and 2024-05-01 12:00:00+02:00", "at <time> and <time>"),
        ("since Thu Nov 16 10:00:00 UTC 2023", "since <time>"),
        ("user bob@example.com", "user <email>"),
        ("sha deadbeef stays a word, cafe1234 is an id", "sha deadbeef stays a word, <hex> is an id"),
        ("  spaced\n\tout  ", "spaced out"),
    ],
)
def test_strip_message(message: str, pattern: str) -> None:
    assert strip_message(message) == pattern


def test_hostile_input_is_bounded() -> None:
    huge = "x" * 10_000_000 + " 1"
    assert len(strip_message(huge)) <= 4000
    assert top_frames("\tat a.B.c(B.java:1)\n" * 100_000) == ["a.B.c"] * 3
    assert fingerprint(error_class="\x00\ud800", error_message="\ud800", origin="").digest
