"""The event machinery stands alone: a throwaway Django project that installs only `eventing`
(and imports the `contract`), with one small app of its own, runs a projection exactly once
against the real broker, replay included, without loading any of this project's apps, its
live pages, Channels or Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from textwrap import dedent

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Packages of this project the throwaway one must not load (nor the libraries of the layers
# above the machinery).
NOT_LOADED = (
    "foodsite",
    "orders",
    "deliveries",
    "stats",
    "notifications",
    "recommendations",
    "deadletters",
    "live",
    "observability",
    "channels",
    "daphne",
    "prometheus_client",
)

FILES = {
    "tallysite/__init__.py": "",
    "tallysite/settings.py": """
        import os
        SECRET_KEY = "throwaway"
        USE_TZ = True
        INSTALLED_APPS = ["eventing", "tally"]
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["TALLY_DB"]}}
        KAFKA_BOOTSTRAP_SERVERS = os.environ["TALLY_KAFKA"]
        KAFKA_TOPIC_PREFIX = KAFKA_GROUP_PREFIX = os.environ["TALLY_PREFIX"]
        KAFKA_PARTITIONS = 2
        """,
    "tally/__init__.py": "",
    "tally/models.py": """
        from django.db import models

        class DishTally(models.Model):
            dish_id = models.IntegerField(primary_key=True)
            quantity = models.IntegerField(default=0)
        """,
    # Counts by adding: applied twice, an event would count twice.
    "tally/projection.py": """
        from django.db.models import F

        from contract.events import ORDERS, OrderPlaced
        from eventing.projection import Projection
        from eventing.registry import register
        from tally.models import DishTally

        @register
        class DishTallyProjection(Projection):
            group = "tally"
            topics = (ORDERS,)
            handles = (OrderPlaced,)

            def apply(self, events):
                for consumed in events:
                    for line in consumed.payload.lines:
                        DishTally.objects.get_or_create(dish_id=line.dish_id)
                        DishTally.objects.filter(dish_id=line.dish_id).update(quantity=F("quantity") + line.quantity)

            def reset(self):
                DishTally.objects.all().delete()
        """,
    "tally/management/__init__.py": "",
    "tally/management/commands/__init__.py": "",
    "tally/management/commands/consume_tally.py": """
        from eventing.command import ConsumerCommand
        from tally.projection import DishTallyProjection

        class Command(ConsumerCommand):
            projection_class = DishTallyProjection
        """,
    "run.py": """
        import io, json, sys, uuid
        from decimal import Decimal

        import django
        django.setup()
        from django.core.management import call_command
        from django.db import transaction

        from contract.events import Event, OrderLine, OrderPlaced
        from eventing import outbox
        from eventing.producer import get_publisher
        from tally.models import DishTally

        def place(order_id, quantity):
            price, cost = Decimal("9.50"), Decimal("3")
            line = OrderLine(dish_id=7, name="Pizza", quantity=quantity, unit_price=price, unit_cost=cost)
            with transaction.atomic():
                outbox.enqueue(Event(OrderPlaced(order_id, "Ada", "1 Main St", [line], Decimal("9.50") * quantity)))

        def consume(*flags):
            out = io.StringIO()
            call_command("consume_tally", *flags, stdout=out, stderr=io.StringIO())
            return out.getvalue().strip()

        def tally():
            return {row.dish_id: row.quantity for row in DishTally.objects.all()}

        call_command("migrate", run_syncdb=True, verbosity=0)
        call_command("init_kafka", stdout=io.StringIO())
        steps = {}
        for n, quantity in enumerate((1, 2, 3)):
            place(str(uuid.uuid4()), quantity)
        assert get_publisher().flush(10) == 0
        steps["first"] = (consume("--until-caught-up"), tally())
        steps["again"] = (consume("--until-caught-up"), tally())
        place(str(uuid.uuid4()), 4)
        assert get_publisher().flush(10) == 0
        steps["one more"] = (consume("--until-caught-up"), tally())
        steps["replay"] = (consume("--replay"), tally())
        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
        print(json.dumps({"steps": steps, "loaded": loaded}))
        """,
}


@pytest.fixture
def throwaway_project(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text).lstrip())
    return tmp_path


def test_a_project_with_only_the_machinery_applies_each_event_once_and_replays(throwaway_project, kafka_bootstrap):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "KAFKA_", "DATABASE_"))},
        "DJANGO_SETTINGS_MODULE": "tallysite.settings",
        # The project's root for `eventing` and `contract`, nothing else of it on the path first.
        "PYTHONPATH": os.pathsep.join([str(throwaway_project), str(BASE_DIR)]),
        "TALLY_DB": str(throwaway_project / "tally.sqlite3"),
        "TALLY_KAFKA": kafka_bootstrap,
        "TALLY_PREFIX": f"tally-{uuid.uuid4().hex[:8]}-",
    }
    result = subprocess.run(
        [sys.executable, "run.py", json.dumps(NOT_LOADED)],
        cwd=throwaway_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    steps = {name: (line, {int(k): v for k, v in counts.items()}) for name, (line, counts) in outcome["steps"].items()}

    group = env["TALLY_PREFIX"] + "tally"
    assert steps["first"][0].startswith(f"{group}: applied 3, skipped 0, dead-lettered 0 in ")
    assert steps["first"][1] == {7: 6}
    # The group's position is stored with the rows: nothing is applied twice.
    assert steps["again"][0].startswith(f"{group}: applied 0,")
    assert steps["again"][1] == {7: 6}
    assert steps["one more"][0].startswith(f"{group}: applied 1,")
    assert steps["one more"][1] == {7: 10}
    # Rebuilt from the log: the same counts, from every retained event once.
    assert steps["replay"][0].startswith(f"{group}: applied 4,")
    assert steps["replay"][1] == {7: 10}
    assert outcome["loaded"] == []
