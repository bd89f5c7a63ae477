"""An email backend that takes its time, like an SMTP server on a slow link, so that a test
can kill the worker while an email is being sent.

It writes each email as Django's file backend does (FOODSITE_HOME/emails), after
SLOW_EMAIL_SECONDS (default 1). While a send is under way a marker file naming its
Message-IDs is in FOODSITE_HOME/emails-sending/; it is removed once the email is written, so
a marker left behind is a send that never completed."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.core.mail.backends.filebased import EmailBackend


class SlowFileBackend(EmailBackend):
    def send_messages(self, messages: list) -> int:
        sending = Path(settings.EMAIL_FILE_PATH).parent / "emails-sending"
        sending.mkdir(parents=True, exist_ok=True)
        marker = sending / f"{os.getpid()}-{uuid.uuid4().hex}"
        marker.write_text("\n".join(str(m.extra_headers.get("Message-ID")) for m in messages))
        time.sleep(float(os.environ.get("SLOW_EMAIL_SECONDS", "1")))
        sent = super().send_messages(messages)
        marker.unlink()
        return sent
