"""The system's projections: one registry, filled by the installed apps' `projection` modules.

    @register
    class DeliveryProjection(Projection): ...

Projections defined elsewhere (tests, benchmarks) run as well but are not part of the
system: no topics are declared for them, the Kafka view does not list them.
"""

from __future__ import annotations

from django.apps import apps
from django.utils.module_loading import autodiscover_modules

from eventing.projection import Projection

_registered: list[type[Projection]] = []


def register(cls: type[Projection]) -> type[Projection]:
    """Class decorator: `cls` is one of the system's consumer services."""
    if cls not in _registered:
        _registered.append(cls)
    return cls


def installed_projections() -> list[type[Projection]]:
    """The registered projections of the installed apps, sorted by group."""
    autodiscover_modules("projection")
    found = [cls for cls in _registered if apps.is_installed(cls.__module__.split(".")[0])]
    return sorted(found, key=lambda cls: cls.group)


def known_groups() -> dict[str, tuple[str, ...]]:
    """The system's consumer groups (logical name -> topics), so that a service that has
    never run shows too."""
    return {cls.group: tuple(cls.topics) for cls in installed_projections()}


def redrivable_groups() -> list[str]:
    """The groups that read a re-drive topic of their own (`<group>.redrive`)."""
    return sorted({cls.group for cls in installed_projections() if cls.redrive})
