"""An email backend that fails like an SMTP server going away, then recovers."""

from __future__ import annotations

import smtplib

from django.core.mail.backends.locmem import EmailBackend


class FlakyBackend(EmailBackend):
    """Refuses the next `failures` sends (smtplib's error), then delivers to mail.outbox."""

    failures = 0
    attempts = 0

    def send_messages(self, messages: list) -> int:
        type(self).attempts += 1
        if type(self).failures > 0:
            type(self).failures -= 1
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return super().send_messages(messages)
