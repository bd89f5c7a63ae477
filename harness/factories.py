import uuid
from datetime import UTC
from decimal import Decimal

import factory
from django.contrib.auth.models import Group, Permission, User

from deliveries.models import Delivery
from deliveries.permissions import COURIERS_GROUP
from orders.models import Dish

PASSWORD = "test-password-123"


class DishFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dish

    name = factory.Sequence(lambda n: f"Dish {n}")
    price = Decimal("10.00")
    food_cost = Decimal("4.00")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(PASSWORD)


class StaffFactory(UserFactory):
    username = "staff"
    is_staff = True
    is_superuser = True


class CourierFactory(UserFactory):
    class Meta:
        skip_postgeneration_save = True

    username = "courier"

    @factory.post_generation
    def couriers_group(self, create: bool, extracted: object, **kwargs: object) -> None:
        group, _ = Group.objects.get_or_create(name=COURIERS_GROUP)
        group.permissions.add(Permission.objects.get(codename="work_as_courier"))
        self.groups.add(group)


class DeliveryFactory(factory.django.DjangoModelFactory):
    """A row of the deliveries projection: placed and paid, on the courier's list."""

    class Meta:
        model = Delivery

    order_id = factory.LazyFunction(uuid.uuid4)
    customer_name = factory.Sequence(lambda n: f"Customer {n}")
    address = "Via Roma 1"
    items = factory.LazyFunction(lambda: [{"name": "Margherita", "quantity": 1}])
    total = Decimal("8.50")
    placed_at = factory.Faker("date_time_this_month", tzinfo=UTC)
    paid_at = factory.SelfAttribute("placed_at")
