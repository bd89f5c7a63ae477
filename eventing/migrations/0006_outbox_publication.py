"""The Debezium relay's publication (eventing.debezium): the outbox table, inserts only, on
PostgreSQL. Not FOR ALL TABLES: the connector's slot decodes only what it relays.
Made whichever relay runs, so that switching OUTBOX_RELAY needs no migration; a publication
costs nothing until a slot reads it. Nothing on SQLite, which has no logical decoding."""

from django.db import migrations

PUBLICATION = "foodsite_outbox"  # eventing.debezium.PUBLICATION (a migration does not import the app)


def create_publication(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    table = quote(apps.get_model("foodsite", "OutboxEvent")._meta.db_table)
    schema_editor.execute(f"CREATE PUBLICATION {quote(PUBLICATION)} FOR TABLE {table} WITH (publish = 'insert')")


def drop_publication(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP PUBLICATION IF EXISTS {schema_editor.quote_name(PUBLICATION)}")


class Migration(migrations.Migration):
    dependencies = [
        ("foodsite", "0005_outboxevent_claim"),
    ]

    operations = [
        migrations.RunPython(create_publication, drop_publication),
    ]
