"""Round trips to a server, counted on the wire: a TCP relay between a client and the server
that counts each time the client speaks after the server did (it is waiting for a new answer).
bench/order_cost.py counts an order's round trips to PostgreSQL with it, and the tests check
the order's single one. No Django here: the benchmark loads it beside another checkout's code.

Pipelined requests sent while the first answers already arrive would count as more than one
round trip each time the server got a word in; nothing here pipelines."""

from __future__ import annotations

import contextlib
import socket
import threading


class RoundTripRelay:
    """Listens on 127.0.0.1:`port` and relays each connection to `upstream`. `round_trips`
    counts those of every connection; `round_trips_of(port)` those of the connection the
    server sees coming from that port (PostgreSQL: `SELECT inet_client_port()`)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.round_trips = 0
        self._by_port: dict[int, int] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="round-trip-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self.upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            port = server.getsockname()[1]
            last = ["server"]  # who spoke last on this connection: the client speaks first
            threading.Thread(target=self._pump, args=(client, server, "client", last, port), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "server", last, port), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, side: str, last: list[str], port: int) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:  # counted before it is forwarded: its answer cannot overtake it
                    if side == "client" and last[0] == "server":
                        self.round_trips += 1
                        self._by_port[port] = self._by_port.get(port, 0) + 1
                    last[0] = side
                sink.sendall(data)
        except OSError:
            pass  # the other side went away
        finally:
            for sock in (source, sink):  # the other pump's recv returns too
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            source.close()  # each socket is one pump's source

    def round_trips_of(self, port: int) -> int:
        with self._lock:
            return self._by_port.get(port, 0)

    def close(self) -> None:
        self.listener.close()
