"""Helpers shared by the test suite and the benchmarks: the whole stack as real processes,
load clients, a headless browser, a Kafka test bed, event streams and model factories."""
