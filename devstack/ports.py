"""Ports for the local servers: a free one to start a server on, and telling a port that turned
out taken from any other reason a server stopped.

A port picked "free" is free only when it is picked: the server binds it later (a JVM takes
seconds to get there), and in between any process of the machine may take it: another one
picking a free port by asking the kernel (bind to port 0), or an outgoing connection. The
kernel gives both their port from its ephemeral range (net.ipv4.ip_local_port_range), and a
port that is the local end of a connection cannot be listened on. It keeps the two apart by
parity (here bind to port 0 gets odd ports, connect() even ones) until one half runs short.
free_port() picks outside that range, where neither goes, at random; what is left (two
callers of free_port() choosing the same port) the servers handle by starting again on
another port (devstack.local_server), unless the port was named by the user: that one is
never moved. The ports a process will bind later, not yet bound (the launcher's web on PORT,
started after Kafka), it reserves first, and free_port() never picks them: CI once saw the
embedded broker's controller, picked free, take the PORT the web was to listen on.
"""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Iterable
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL_RANGE = (32768, 60999)
# Below this, ports are the well-known and registered ones servers are configured on
# (PostgreSQL's 5432, Kafka's 9092...): never picked for a throwaway server.
LOWEST_PICKED = 10_000
ADDRESS_IN_USE = "Address already in use"
# A private generator: Hypothesis seeds the global one in every test, which would make every
# pytest process pick the same "random" ports.
_chance = random.SystemRandom()
_reserved: set[int] = set()


def reserve(ports: Iterable[int]) -> None:
    """Ports this process will bind itself later: free_port() does not pick them."""
    _reserved.update(ports)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (and of bind to port 0)."""
    try:
        low, high = (int(part) for part in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL_RANGE
    return low, high


def _pickable() -> list[range]:
    low, high = ephemeral_range()
    return [r for r in (range(LOWEST_PICKED, min(low, 65536)), range(max(high + 1, LOWEST_PICKED), 65536)) if r]


def free_port() -> int:
    """A port nothing holds now on 127.0.0.1, outside the ephemeral range (see the module's
    docstring). Still only free now: a server started on it may find it taken (port_taken_in)."""
    ranges = _pickable()
    for _ in range(200) if ranges else ():
        chosen = _chance.choice(ranges)
        port = _chance.randrange(chosen.start, chosen.stop)
        if port not in _reserved and bindable(port):
            return port
    # Nothing outside the ephemeral range (a machine configured so): the kernel's choice.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int, taken: set[int] = frozenset()) -> list[int]:
    """`count` distinct free ports, none of them in `taken`."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in taken:
            ports.append(port)
    return ports


def free_port_block(count: int) -> int:
    """The first of `count` consecutive ports free now (the launcher takes PORT and the next,
    KAFKA_PORT and the next two)."""
    low, high = ephemeral_range()
    while True:
        block = range(first := free_port(), first + count)
        if block[-1] < 65536 and not any(low <= port <= high for port in block) and all(map(bindable, block)):
            return first


def bindable(port: int) -> bool:
    """True if a socket may bind 127.0.0.1:port now, without SO_REUSEADDR: nothing listens
    there, no connection uses it, no recent connection lingers on it (TIME_WAIT)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def held(port: int) -> bool:
    """True if a server could not listen on 127.0.0.1:port now: something listens there or a
    connection uses it as its local end. With SO_REUSEADDR, as every server here binds, so a
    connection lingering in TIME_WAIT does not count."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return True
    return False


def port_taken_in(output: str, ports: list[int]) -> set[int]:
    """Which of a server's `ports` its `output` says it could not bind ("Address already in
    use"). The servers name the port in that line (Kafka: "failed to bind to 127.0.0.1:9092:
    Address already in use", Redis: "127.0.0.1:6379: bind: Address already in use") or, having
    only one, do not (PostgreSQL: 'could not bind IPv4 address "127.0.0.1": Address already in use')."""
    taken: set[int] = set()
    for line in output.splitlines():
        if ADDRESS_IN_USE not in line:
            continue
        named = {int(number) for number in re.findall(r":(\d{1,5})\b", line)} & set(ports)
        taken |= named or (set(ports) if len(ports) == 1 else set())
    return taken
