"""Local services for development and tests: a Kafka node or cluster from Maven's jars,
PostgreSQL and Redis from Debian's binaries, and the launcher that starts them with every
process of the project (`make run`). No Django and nothing of the project: plain processes."""
