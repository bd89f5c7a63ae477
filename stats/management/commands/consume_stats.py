from eventing.command import ConsumerCommand
from stats.projection import SalesProjection


class Command(ConsumerCommand):
    help = "Run the statistics service: consumer group `stats` on orders and payments."
    projection_class = SalesProjection
