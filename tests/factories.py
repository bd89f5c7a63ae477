from decimal import Decimal

import factory
from django.contrib.auth.models import Group, Permission, User

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
