from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

COURIER_PERMISSION = "deliveries.work_as_courier"
COURIERS_GROUP = "couriers"


def is_courier(user: AbstractBaseUser | AnonymousUser) -> bool:
    return user.is_authenticated and user.has_perm(COURIER_PERMISSION)
