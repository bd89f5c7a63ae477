from eventing.command import ConsumerCommand
from notifications.projection import NotificationProjection


class Command(ConsumerCommand):
    help = (
        "Run the notifications service: consumer group `notifications` on orders, payments and "
        "delivery-status; emails go out through Celery tasks (the worker process)."
    )
    projection_class = NotificationProjection
