from deadletters.projection import DeadLetterRecorder
from eventing.command import ConsumerCommand


class Command(ConsumerCommand):
    help = "Record dead letters for the staff page: consumer group `dead-letters` on every <topic>.dlq."
    projection_class = DeadLetterRecorder
