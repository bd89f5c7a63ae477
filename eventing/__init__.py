"""The event machinery: a Django app another project can install.

Producers write events with the change they describe (outbox) and send them after the commit;
consumers are small Projection classes run by one shared loop (runner) that stores their
rows and their group's offsets in one transaction, dead-letters what it cannot apply and
reads back what staff re-drive. It imports the event contract and nothing else of the
project: metrics and what follows a commit are hooks the project sets (eventing.hooks).
"""
