"""A scripted MQTT "broker" on loopback for tests that must see (or send) exact bytes: it
listens, and the test accepts mgate's connection and reads and writes whole packets itself,
as raw bytes (what mosquitto would re-encode or refuse, e.g. enhanced authentication)."""
import select
import socket
import time

import harness as h


class FakeBroker:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((h.HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def accept(self, timeout=5.0):
        """The next connection from mgate, or None when none comes in time."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return None
        conn, _ = self.sock.accept()
        return Peer(conn)

    def close(self):
        self.sock.close()


class Peer:
    """One connection, read and written in whole packets of raw bytes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def read_raw(self, timeout=5.0):
        """The next whole packet, fixed header included; raises h.Closed or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            total = self._whole()
            if total:
                out = bytes(self.buf[:total])
                del self.buf[:total]
                return out
            left = deadline - time.monotonic()
            r, _, _ = select.select([self.sock], [], [], max(0.0, left))
            if not r:
                raise TimeoutError("no packet in time")
            data = self.sock.recv(65536)
            if not data:
                raise h.Closed()
            self.buf += data

    def _whole(self):
        """The size of the first packet when all of it is buffered, else 0."""
        n, mul = 0, 1
        for i in range(1, min(len(self.buf), 5)):
            n += (self.buf[i] & 0x7F) * mul
            mul *= 128
            if not self.buf[i] & 0x80:
                return 1 + i + n if len(self.buf) >= 1 + i + n else 0
        return 0

    def closed(self, timeout=3.0):
        """True when the other end closes within timeout (anything read meanwhile is dropped)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.read_raw(max(0.0, deadline - time.monotonic()))
        except (h.Closed, ConnectionResetError):
            return True
        except TimeoutError:
            return False

    def close(self):
        self.sock.close()


def connack(reason=0, props=()):
    return h.packet(h.CONNACK, 0, bytes([0, reason]) + h.props_encode(props))


def auth(reason, props=()):
    return h.packet(h.AUTH, 0, bytes([reason]) + h.props_encode(props))
