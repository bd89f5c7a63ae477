"""`manage.py check --deploy`: /metrics must not be readable by anyone who guesses its URL."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.core.checks import Tags, Warning, register

MIN_TOKEN_LENGTH = 32


@register(Tags.security, deploy=True)
def metrics_protection(app_configs: object, **kwargs: object) -> list[Warning]:
    problems = []
    if settings.METRICS_TOKEN and len(settings.METRICS_TOKEN) < MIN_TOKEN_LENGTH:
        problems.append(
            Warning(
                f"METRICS_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters.",
                hint="Use a long random token, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'.",
                id="foodsite.W001",
            )
        )
    for network in settings.METRICS_ALLOWED_NETWORKS:
        try:
            parsed = ipaddress.ip_network(network, strict=False)
        except ValueError:
            problems.append(Warning(f"METRICS_ALLOWED_NETWORKS: {network!r} is not a network.", id="foodsite.W002"))
            continue
        if parsed.is_global or parsed.prefixlen == 0:
            problems.append(
                Warning(
                    f"METRICS_ALLOWED_NETWORKS opens /metrics to the internet ({network}).",
                    hint="List only your monitoring network, or use METRICS_TOKEN.",
                    id="foodsite.W003",
                )
            )
    return problems
