"""Kafka plumbing shared by every app: topic names, the producer, the consumer runner."""
