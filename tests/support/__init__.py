"""What the tests (and the benchmarks) run beside taoflow, by job:

ports        free loopback ports, waiting for a listener, floods
processes    servers until they listen, log lines, children, memory, random kills
brokers      tansu (Kafka protocol, in memory or on S3), moto (S3)
servers      vLLM on CPU, Prometheus, a Ray cluster
state        taoflow state arranged from outside
rounds       the tiny round settings and seeded state the round tests share
fixtures     the pytest fixtures that start them (tests/conftest.py loads them)
volume, delta_tables, reward_model   data the volume, Delta and model-scorer tests make
"""
