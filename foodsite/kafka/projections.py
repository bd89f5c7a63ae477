"""The system's projections: the Projection classes of the installed apps (`<app>/projection.py`)."""

from __future__ import annotations

from django.apps import apps
from django.utils.module_loading import autodiscover_modules

from foodsite.kafka.runner import Projection


def installed_projections() -> list[type[Projection]]:
    """Every concrete Projection class defined in an installed app's `projection` module,
    sorted by group (test projections, defined elsewhere, are not part of the system)."""
    autodiscover_modules("projection")
    found: list[type[Projection]] = []
    pending = list(Projection.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        module = cls.__module__
        if module.endswith(".projection") and apps.is_installed(module.split(".")[0]) and getattr(cls, "group", None):
            found.append(cls)
    return sorted(found, key=lambda cls: cls.group)


def redrivable_groups() -> list[str]:
    """The groups that read a re-drive topic of their own (`<group>.redrive`)."""
    return sorted({cls.group for cls in installed_projections() if cls.redrive})
