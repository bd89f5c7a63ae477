"""Live pages' transport: a consumer's commit becomes a notice on Kafka, each web process's
bridge hands it to the Channels group of that page, and each socket sends its page again.
The pages and who may follow them are the apps' (their `sockets.py`)."""
