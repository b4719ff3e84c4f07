"""Peer benchmark: python-mysql-replication reading the same binlog as tidemark.

Usage: peer_python.py HOST PORT DATABASE TABLE LOG_FILE [LOG_POS]

Streams from LOG_FILE:LOG_POS to the end of the log (non-blocking), decodes every
WriteRowsEvent of DATABASE.TABLE (ev.rows decodes each row's values) and prints
`rows=N seconds=S` (time spent streaming and decoding, imports excluded).
"""

import sys
import time

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent


def main() -> int:
    if len(sys.argv) not in (6, 7):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, database, table, log_file = sys.argv[1:6]
    log_pos = int(sys.argv[6]) if len(sys.argv) == 7 else 4
    stream = BinLogStreamReader(
        connection_settings={"host": host, "port": int(port), "user": "root", "passwd": ""},
        server_id=7302,
        log_file=log_file,
        log_pos=log_pos,
        resume_stream=True,
        blocking=False,
        only_events=[WriteRowsEvent],
        only_schemas=[database],
        only_tables=[table],
        enable_logging=False,
    )
    began = time.monotonic()
    rows = 0
    try:
        for event in stream:
            rows += len(event.rows)
    finally:
        stream.close()
    print(f"rows={rows} seconds={time.monotonic() - began:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
