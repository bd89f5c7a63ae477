"""A reproducible stream of orders and payments, with its ground truth, for the fault tests."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from confluent_kafka import Producer

from contract.events import Event, OrderLine, OrderPlaced, PaymentFailed, PaymentSucceeded
from eventing.topics import topic_name

# (dish id, name, price, food cost)
MENU = [(i, f"Dish {i}", Decimal(f"{5 + i}.50"), Decimal(f"{1 + i // 2}.20")) for i in range(1, 13)]
POISON = [
    b"{this is not json",
    b'{"id": "x", "type": "order.eaten", "version": 1, "occurred_at": "2026-01-01T00:00:00+00:00", "data": {}}',
    b'{"id": "y", "type": "order.placed", "version": 1, "occurred_at": "2026-01-01T00:00:00+00:00", '
    b'"data": {"order_id": "z"}}',
]


@dataclass
class GroundTruth:
    paid_orders: set[str] = field(default_factory=set)
    revenue: Decimal = Decimal("0")
    food_cost: Decimal = Decimal("0")
    dishes: Counter = field(default_factory=Counter)
    poison_sent: int = 0

    def as_result(self) -> dict:
        return {
            "orders": len(self.paid_orders),
            "revenue": str(self.revenue),
            "food_cost": str(self.food_cost),
            "dishes": {str(k): v for k, v in sorted(self.dishes.items())},
            "deliveries": sorted(self.paid_orders),
        }


class OrderStream:
    """Produces orders; by default 90% are paid (payment after the order) and 5% get a failed
    payment first."""

    def __init__(self, bootstrap_servers: str, seed: int = 7, paid_share: float = 0.9) -> None:
        self.truth = GroundTruth()
        self.events_sent = 0
        self._paid_share = paid_share
        self._random = random.Random(seed)
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "partitioner": "murmur2_random",
                "linger.ms": 20,
                "enable.idempotence": True,
            }
        )

    def produce(self, orders: int, poison_every: int = 0) -> None:
        for n in range(orders):
            self._order()
            if poison_every and n % poison_every == 0:
                self._send("orders", str(uuid.uuid4()), self._random.choice(POISON))
                self.truth.poison_sent += 1
            if n % 1000 == 0:
                self._producer.poll(0)
        assert self._producer.flush(30) == 0

    def _order(self) -> None:
        order_id = str(uuid.uuid4())
        lines = [
            OrderLine(dish, name, self._random.randint(1, 3), price, cost)
            for dish, name, price, cost in self._random.sample(MENU, self._random.randint(1, 3))
        ]
        total = sum((line.price for line in lines), Decimal("0"))
        self._publish(OrderPlaced(order_id, "Customer", "Via Roma 1", lines, total))
        luck = self._random.random()
        if luck < 0.05 and self._paid_share < 1:
            self._publish(PaymentFailed(order_id, total, "declined"))
        if luck < self._paid_share:
            self._publish(PaymentSucceeded(order_id, total, "4242"))
            self.truth.paid_orders.add(order_id)
            self.truth.revenue += total
            self.truth.food_cost += sum((line.cost for line in lines), Decimal("0"))
            for line in lines:
                self.truth.dishes[line.dish_id] += line.quantity

    def _publish(self, payload: object) -> None:
        event = Event(payload)
        self._send(payload.TOPIC, event.key, event.to_json())

    def _send(self, logical_topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic_name(logical_topic), key=key.encode(), value=value)
                self.events_sent += 1
                return
            except BufferError:  # local queue full: let librdkafka send some
                self._producer.poll(0.1)
