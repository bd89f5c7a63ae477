import os
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management.base import BaseCommand, CommandError

from deliveries.permissions import COURIERS_GROUP
from orders.models import Dish

# (name, description, price, food cost)
DEMO_MENU = [
    ("Margherita", "Tomato, mozzarella, basil", "8.50", "2.40"),
    ("Diavola", "Tomato, mozzarella, spicy salami", "10.00", "3.10"),
    ("Quattro formaggi", "Four cheeses", "11.00", "3.90"),
    ("Spaghetti carbonara", "Guanciale, egg, pecorino", "12.00", "3.20"),
    ("Lasagne", "Ragù, béchamel, parmigiano", "13.50", "4.10"),
    ("Risotto ai funghi", "Porcini, parmigiano", "14.00", "4.80"),
    ("Insalata caprese", "Tomato, mozzarella, basil", "7.50", "2.60"),
    ("Arancini", "Three fried rice balls", "6.00", "1.70"),
    ("Tiramisù", "Mascarpone, coffee, cocoa", "5.50", "1.40"),
    ("Panna cotta", "With berry coulis", "5.00", "1.20"),
    ("Acqua minerale", "50 cl", "2.00", "0.40"),
    ("Birra artigianale", "33 cl craft beer", "4.50", "1.60"),
]


class Command(BaseCommand):
    help = "Load the demo menu and a courier and a staff user. Safe to run again."

    def handle(self, *args: object, **options: object) -> None:
        password = os.environ.get("DEMO_PASSWORD") or ("foodsite-demo" if settings.DEBUG else "")
        if not password:
            raise CommandError("Set DEMO_PASSWORD: production settings have no default demo password.")
        for name, description, price, cost in DEMO_MENU:
            Dish.objects.update_or_create(
                name=name,
                defaults={"description": description, "price": Decimal(price), "food_cost": Decimal(cost)},
            )
        couriers, _ = Group.objects.get_or_create(name=COURIERS_GROUP)
        couriers.permissions.add(Permission.objects.get(codename="work_as_courier"))
        courier = self._user("courier", password, is_staff=False)
        courier.groups.add(couriers)
        self._user("staff", password, is_staff=True, is_superuser=True)
        self.stdout.write(f"demo menu: {Dish.objects.count()} dishes")
        self.stdout.write(f"demo users: courier / {password}   staff / {password}")

    def _user(self, username: str, password: str, **flags: bool) -> User:
        user, created = User.objects.get_or_create(username=username, defaults=flags)
        if created:
            user.set_password(password)
            user.save()
        return user
