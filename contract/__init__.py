"""The event contract: every event's schema, its JSON and Avro encodings, and the topics the
events go to. Producers and consumers both import it, in this project or in another one, so
it imports nothing of the project and nothing of Django (docs/architecture.md, "Layers")."""
