#!/usr/bin/env python3
"""Interop peer: emit N billing records with the Python `fluent-logger` package.

Usage: py_send.py HOST PORT N KEY_PREFIX

Uses fluent-logger's ``sender.FluentSender('billing', host, port)``, which
speaks Forward protocol *Message* mode (``[tag, time, record]``, integer
seconds as time, no ack).  Record i (0-based) is:

    tag    = "billing"
    time   = 1795754038 + i                       (2026-11-27T04:33:58Z + i s)
    record = {"unique_key": f"{KEY_PREFIX}-{i}:node-seconds",
              "internal_instance_id": "py-instance",
              "amount_type": "node-seconds",
              "amount_value": i + 1,
              "occurred_at": <RFC3339 of time>,
              "metadata": {"peer": "python", "seq": str(i)}}

Exits 0 only if every emit succeeded and nothing was left unsent at close;
otherwise prints one line to stderr and exits 1 (2 on bad usage).
"""

import datetime
import sys

from fluent import sender

BASE_EPOCH = 1795754038  # 2026-11-27T04:33:58Z


def rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def main(argv):
    if len(argv) != 5:
        print("usage: py_send.py HOST PORT N KEY_PREFIX", file=sys.stderr)
        return 2
    host, port, n, prefix = argv[1], int(argv[2]), int(argv[3]), argv[4]

    overflowed = []
    logger = sender.FluentSender(
        "billing",
        host=host,
        port=port,
        timeout=5.0,
        buffer_overflow_handler=lambda pending: overflowed.append(len(pending)),
    )
    failures = []
    for i in range(n):
        t = BASE_EPOCH + i
        record = {
            "unique_key": f"{prefix}-{i}:node-seconds",
            "internal_instance_id": "py-instance",
            "amount_type": "node-seconds",
            "amount_value": i + 1,
            "occurred_at": rfc3339(t),
            "metadata": {"peer": "python", "seq": str(i)},
        }
        # label None -> tag is exactly "billing"
        if not logger.emit_with_time(None, t, record):
            failures.append((i, repr(logger.last_error)))
            logger.clear_last_error()
    logger.close()

    if failures or overflowed or logger.pendings:
        print(
            f"py_send: {len(failures)} of {n} emits failed (first: {failures[:1]}), "
            f"unsent at close: {sum(overflowed)} bytes",
            file=sys.stderr,
        )
        return 1
    print(f"py_send: sent {n} records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
