"""What the people on call read: Prometheus metrics for every process (/metrics) and the
deploy checks that keep /metrics closed. Trace ids in the logs are eventing.tracing's."""
