#!/usr/bin/env python3
"""A minimal CQL client (native protocol v4, Python standard library only) for dev/cassandra.

    cql.py ping HOST PORT               exit 0 once the server answers a query
                                        (SELECT release_version FROM system.local), printing it
    cql.py exec HOST PORT STATEMENT...  run each statement at consistency ONE and print the
                                        rows: a header line, then one line per row, columns
                                        separated by " | " (null as "null", blobs as 0x...)

Not a driver: no paging (the server sends every row), no prepared statements, no auth, no TLS.
It exists so that `dev/cassandra start` can tell that a query really answers, and for checks by
hand; tests use a real driver.
"""
import datetime
import decimal
import ipaddress
import socket
import struct
import sys
import uuid

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x07, 0x08
CONSISTENCY_ONE = 0x0001


class CqlError(Exception):
    pass


class Buf:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise CqlError("truncated frame")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def string(self):
        return self.take(self.short()).decode("utf-8")

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def string_list(self):
        return [self.string() for _ in range(self.short())]

    def option(self):
        kind = self.short()
        if kind == 0x0000:
            return ("custom", self.string())
        if kind in (0x20, 0x22):
            return (kind, self.option())
        if kind == 0x21:
            return (kind, self.option(), self.option())
        if kind == 0x30:
            self.string(), self.string()
            return (kind, [(self.string(), self.option()) for _ in range(self.short())])
        if kind == 0x31:
            return (kind, [self.option() for _ in range(self.short())])
        return (kind,)


def decode(opt, raw):
    if raw is None:
        return None
    kind = opt[0]
    if kind in (0x01, 0x0D):
        return raw.decode("utf-8")
    if kind in (0x02, 0x05, 0x0E, 0x09, 0x13, 0x14, 0x12):
        return int.from_bytes(raw, "big", signed=True)
    if kind == 0x04:
        return raw != b"\x00"
    if kind == 0x07:
        return struct.unpack(">d", raw)[0]
    if kind == 0x08:
        return struct.unpack(">f", raw)[0]
    if kind == 0x06:
        scale = struct.unpack(">i", raw[:4])[0]
        return decimal.Decimal(int.from_bytes(raw[4:], "big", signed=True)).scaleb(-scale)
    if kind == 0x0B:
        ms = struct.unpack(">q", raw)[0]
        return (datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)).isoformat() + "Z"
    if kind in (0x0C, 0x0F):
        return str(uuid.UUID(bytes=raw))
    if kind == 0x10:
        return str(ipaddress.ip_address(raw))
    if kind == 0x11:
        days = struct.unpack(">I", raw)[0] - (1 << 31)
        return (datetime.date(1970, 1, 1) + datetime.timedelta(days=days)).isoformat()
    if kind in (0x20, 0x22, 0x21):
        b = Buf(raw)
        n = b.int()
        if kind == 0x21:
            return {decode(opt[1], b.bytes()): decode(opt[2], b.bytes()) for _ in range(n)}
        return [decode(opt[1], b.bytes()) for _ in range(n)]
    return "0x" + raw.hex()


def fmt(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class Conn:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.stream = 0
        self.request(OP_STARTUP, self.string_map({"CQL_VERSION": "3.0.0"}), expect=OP_READY)

    @staticmethod
    def string(s):
        b = s.encode("utf-8")
        return struct.pack(">H", len(b)) + b

    def string_map(self, m):
        return struct.pack(">H", len(m)) + b"".join(self.string(k) + self.string(v) for k, v in m.items())

    def recv(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise CqlError("connection closed by the server")
            out += chunk
        return out

    def request(self, opcode, body, expect=None):
        self.stream = (self.stream + 1) % 32768
        self.sock.sendall(struct.pack(">BBhBi", VERSION, 0, self.stream, opcode, len(body)) + body)
        _, flags, _, op, length = struct.unpack(">BBhBi", self.recv(9))
        b = Buf(self.recv(length))
        if flags & 0x02:
            b.take(16)  # tracing id
        if flags & 0x08:
            for w in b.string_list():
                print("warning: " + w, file=sys.stderr)
        if flags & 0x04:
            for _ in range(b.short()):
                b.string(), b.bytes()
        if op == OP_ERROR:
            code = b.int()
            raise CqlError("server error 0x%04x: %s" % (code, b.string()))
        if expect is not None and op != expect:
            raise CqlError("unexpected opcode 0x%02x" % op)
        return b

    def query(self, cql):
        body = struct.pack(">i", len(cql.encode("utf-8"))) + cql.encode("utf-8")
        body += struct.pack(">HB", CONSISTENCY_ONE, 0)
        b = self.request(OP_QUERY, body, expect=OP_RESULT)
        if b.int() != 0x0002:  # not Rows: Void, Set_keyspace, Schema_change
            return None, None
        flags, ncols = b.int(), b.int()
        if flags & 0x0002:
            b.bytes()  # paging state
        names, opts = [], []
        if not flags & 0x0004:
            if flags & 0x0001:
                b.string(), b.string()
            for _ in range(ncols):
                if not flags & 0x0001:
                    b.string(), b.string()
                names.append(b.string())
                opts.append(b.option())
        rows = []
        for _ in range(b.int()):
            rows.append([decode(opts[i], b.bytes()) for i in range(ncols)])
        return names, rows


def main(argv):
    if len(argv) < 4 or argv[1] not in ("ping", "exec"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, port = argv[2], int(argv[3])
    try:
        conn = Conn(host, port, timeout=5 if argv[1] == "ping" else 60)
        if argv[1] == "ping":
            _, rows = conn.query("SELECT release_version FROM system.local")
            print(rows[0][0])
            return 0
        for stmt in argv[4:]:
            names, rows = conn.query(stmt)
            if names is not None:
                print(" | ".join(names))
                for row in rows:
                    print(" | ".join(fmt(v) for v in row))
        return 0
    except (OSError, CqlError, IndexError) as e:
        print("cql: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
