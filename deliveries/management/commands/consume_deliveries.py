from deliveries.projection import DeliveryProjection
from eventing.command import ConsumerCommand


class Command(ConsumerCommand):
    help = "Run the deliveries service: consumer group `deliveries` on orders and payments."
    projection_class = DeliveryProjection
