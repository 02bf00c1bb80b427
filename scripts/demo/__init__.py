"""Demo programs that play the USER'S applications: producers and buggy consumers.

They publish a realistic mix of messages to the local brokers and fail some of them, so that the
brokers themselves (or the framework, as Spring Kafka and Kafka Connect do) dead-letter real
messages for `make run`'s demo and for the tests. They talk to the brokers with the raw client
libraries on purpose: the console's own code goes through ``recovery/brokers/`` only.

Entry points live in :mod:`scripts.demo.failing_consumers`.
"""
