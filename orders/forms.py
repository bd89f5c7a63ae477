from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import date

from django import forms

from orders.models import Dish
from orders.services import MAX_QUANTITY, Card, CartItem

QUANTITY_PREFIX = "qty-"
# The key is the page's own hidden field: only a hand-made request or a damaged page sends a
# bad one, and its customer can do nothing with "at most 64 characters" about a field they never saw.
DAMAGED_KEY = "This form is damaged (its hidden key): reload the menu and order again."
# A request carrying any of these was built by hand: prices come from our menu only.
PRICE_FIELDS = ("price", "total", "unit_price", "amount")
# [0-9], not \d nor str.isdigit(): those take "²" (which int() refuses) and "٣" (which it
# reads as 3), so "qty-٣" and "qty-03" would name dish 3 beside "qty-3", and a cart could hold
# a dish twice, each time up to the limit.
DISH_ID = re.compile(r"[1-9][0-9]{0,17}")  # as the menu writes it; within the database's integer
QUANTITY = re.compile(r"[+-]?[0-9]+")  # signed, so that "-2" is told the range, not "not a number"


def dish_id_of(key: str) -> int | None:
    """The dish a posted field's key names (`qty-<id>`, as the menu writes it), or None."""
    if not key.startswith(QUANTITY_PREFIX):
        return None
    dish_id = key.removeprefix(QUANTITY_PREFIX)
    return int(dish_id) if DISH_ID.fullmatch(dish_id) else None


def quantity_of(typed: str) -> int | None:
    """A typed quantity as a number, or None if it is not a whole number (ASCII digits)."""
    typed = typed.strip()
    if not QUANTITY.fullmatch(typed):
        return None
    # Past a few digits it is out of range anyway; int() of thousands of digits is an error.
    return int(typed) if len(typed) <= 6 else MAX_QUANTITY + 1


class OrderForm(forms.Form):
    """Name, address and a quantity per dish (`qty-<dish id>`); empty means not in the cart."""

    customer_name = forms.CharField(label="Your name", max_length=100)
    address = forms.CharField(label="Delivery address", max_length=300)
    email = forms.EmailField(
        label="Email (optional)", required=False, help_text="We email you when the order is received, paid, on its way."
    )
    idempotency_key = forms.CharField(
        widget=forms.HiddenInput,
        max_length=64,
        required=False,
        initial=lambda: uuid.uuid4().hex,
        error_messages={"max_length": DAMAGED_KEY, "null_characters_not_allowed": DAMAGED_KEY},
    )

    def __init__(self, *args: object, dishes: list[Dish], **kwargs: object) -> None:
        """`dishes`: those the posted quantities may name (any other is "not on the menu")."""
        super().__init__(*args, **kwargs)
        self.dishes = {dish.pk: dish for dish in dishes}

    @staticmethod
    def dish_ids_in(data: Mapping[str, str]) -> set[int]:
        """The dish ids posted quantities name (to read only those dishes)."""
        return {dish_id for dish_id in map(dish_id_of, data) if dish_id is not None}

    def renew_key(self) -> None:
        """A new idempotency key for the form as it is shown again (bound: it shows what was posted)."""
        self.data = self.data.copy()
        self.data["idempotency_key"] = uuid.uuid4().hex

    def menu_rows(self, menu: list[Dish]) -> list[tuple[Dish, str]]:
        """Each dish with the quantity typed for it, so a refused form keeps the cart."""
        return [(dish, self.data.get(f"{QUANTITY_PREFIX}{dish.pk}", "")) for dish in menu]

    def clean(self) -> dict:
        cleaned = super().clean()
        if any(key.startswith(PRICE_FIELDS) for key in self.data):
            raise forms.ValidationError("Prices come from our menu; a request must not send one.")
        items, errors = [], []
        for key in self.data:
            if not key.startswith(QUANTITY_PREFIX):
                continue
            raw = self.data[key].strip()
            if not raw:
                continue
            dish = self.dishes.get(dish_id_of(key))
            if dish is None:
                errors.append(f"Unknown dish {key.removeprefix(QUANTITY_PREFIX)[:20]!r}: it is not on the menu.")
                continue
            quantity = quantity_of(raw)
            if quantity is None:
                errors.append(f"Quantity of {dish.name} must be a whole number.")
                continue
            if not 1 <= quantity <= MAX_QUANTITY:
                errors.append(
                    f"Quantity of {dish.name} must be between 1 and {MAX_QUANTITY} (leave it empty to skip the dish)."
                )
                continue
            items.append(CartItem(dish_id=dish.pk, quantity=quantity))
        if errors:
            raise forms.ValidationError(errors)
        if not items:
            raise forms.ValidationError("Your cart is empty: choose at least one dish.")
        cleaned["items"] = items
        return cleaned


# ASCII digits, as printed on a card (int() refuses "²", which isdigit() takes).
CARD_NUMBER = re.compile(r"[0-9]{12,19}")
EXPIRY = re.compile(r"(?P<month>[0-9]{1,2})/(?P<year>[0-9]{2})")
CVC = re.compile(r"[0-9]{3,4}")


def luhn_valid(number: str) -> bool:
    total = 0
    for i, digit in enumerate(reversed(number)):
        n = int(digit)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


class PaymentForm(forms.Form):
    """A simulated card form: validated like a real one, charged by nobody."""

    holder = forms.CharField(label="Name on card", max_length=100)
    number = forms.CharField(label="Card number", max_length=23, help_text="Try 4242 4242 4242 4242.")
    expiry = forms.CharField(label="Expiry (MM/YY)", max_length=5)
    cvc = forms.CharField(label="CVC", max_length=4, min_length=3)

    def clean_number(self) -> str:
        number = self.cleaned_data["number"].replace(" ", "").replace("-", "")
        if not CARD_NUMBER.fullmatch(number) or not luhn_valid(number):
            raise forms.ValidationError("This is not a valid card number.")
        return number

    def clean_expiry(self) -> str:
        value = self.cleaned_data["expiry"]
        month_year = EXPIRY.fullmatch(value)
        if not month_year or not 1 <= int(month_year["month"]) <= 12:
            raise forms.ValidationError("Use the MM/YY format.")
        month, year = int(month_year["month"]), int(month_year["year"])
        today = date.today()
        if (2000 + year, month) < (today.year, today.month):
            raise forms.ValidationError("This card has expired.")
        return value

    def clean_cvc(self) -> str:
        if not CVC.fullmatch(self.cleaned_data["cvc"]):
            raise forms.ValidationError("The CVC is 3 or 4 digits.")
        return self.cleaned_data["cvc"]

    def card(self) -> Card:
        return Card(number=self.cleaned_data["number"], holder=self.cleaned_data["holder"])
