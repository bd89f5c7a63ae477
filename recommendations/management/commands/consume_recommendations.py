from eventing.command import ConsumerCommand
from recommendations.projection import RecommendationProjection


class Command(ConsumerCommand):
    help = "Run the recommendations service: consumer group `recommendations` on orders."
    projection_class = RecommendationProjection
