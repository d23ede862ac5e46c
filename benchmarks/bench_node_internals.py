"""Two costs inside a node, each next to its anchor in one run.

    .venv/bin/python benchmarks/bench_node_internals.py [--repeats 5] [--entries 1000000]

1. **The replication frame codec** (``planaria.net.frame.CODEC``: type-checked msgpack of
   ``Append`` / ``AppendReply``, the messages every write sends twice) against raw
   ``msgpack.packb`` / ``unpackb`` of the same lists, which checks nothing: what the checks
   and the dataclasses cost per message.
2. **Garbage-collector pauses over a replica's in-memory log**: a full collection with
   ``entries`` log entries alive, as a node held them before it froze its survivors, against
   the same collection after ``gc.freeze()`` (what ``Node._gc_freeze_loop`` does every
   second). A pause longer than the 300 ms session TTL fails a healthy node over.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import timeit
from collections.abc import Callable
from functools import partial

import msgpack  # type: ignore[import-untyped]

from _common import write_results
from planaria.core.messages import Append, AppendReply, Entry, Set
from planaria.net.frame import CODEC

CALLS = 20_000


def per_call_us(fn: Callable[[], object], repeats: int) -> float:
    return statistics.median(timeit.repeat(fn, number=CALLS, repeat=repeats)) / CALLS * 1e6


def codec(repeats: int) -> dict[str, dict[str, float]]:
    entry = Entry(3, 1001, ("client-0123456789abcdef", 17), Set(b"key:000123", b"v" * 100))
    append = Append(5, 3, "n1", 1000, 3, (entry,), 999, 12345.6)
    reply = AppendReply(5, 3, "n2", True, 1001, 0)
    results: dict[str, dict[str, float]] = {}
    for name, message in (("Append", append), ("AppendReply", reply)):
        payload = CODEC.encode(message)
        assert CODEC.decode(payload) == message
        raw = msgpack.unpackb(payload)
        row = {
            "planaria_encode_us": per_call_us(partial(CODEC.encode, message), repeats),
            "msgpack_encode_us": per_call_us(partial(msgpack.packb, raw), repeats),
            "planaria_decode_us": per_call_us(partial(CODEC.decode, payload), repeats),
            "msgpack_decode_us": per_call_us(partial(msgpack.unpackb, payload), repeats),
        }
        results[name] = {k: round(v, 2) for k, v in row.items()}
        print(
            f"{name:<12} encode {row['planaria_encode_us']:6.2f} us "
            f"(raw msgpack {row['msgpack_encode_us']:5.2f}, "
            f"{row['planaria_encode_us'] / row['msgpack_encode_us']:4.1f}x)   "
            f"decode {row['planaria_decode_us']:6.2f} us "
            f"(raw msgpack {row['msgpack_decode_us']:5.2f}, "
            f"{row['planaria_decode_us'] / row['msgpack_decode_us']:4.1f}x)",
            flush=True,
        )
    return results


def gc_pauses(entries: int, repeats: int) -> dict[str, float]:
    log = [Entry(1, i, (f"c{i % 100}", i), Set(b"key%d" % i, b"v" * 100)) for i in range(entries)]
    kv = {e.op.key: (e.op.value, (1, e.index)) for e in log if isinstance(e.op, Set)}

    def full_collection_ms() -> float:
        started = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - started) * 1000

    plain = statistics.median(full_collection_ms() for _ in range(repeats))
    gc.freeze()
    try:
        frozen = statistics.median(full_collection_ms() for _ in range(repeats))
    finally:
        gc.unfreeze()
    del log, kv
    print(
        f"full GC pause with {entries:,} log entries alive: {plain:7.1f} ms; "
        f"after gc.freeze(): {frozen:6.2f} ms",
        flush=True,
    )
    return {"entries": entries, "plain_ms": round(plain, 1), "frozen_ms": round(frozen, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    results = {"codec": codec(args.repeats), "gc": gc_pauses(args.entries, args.repeats)}
    write_results("node_internals", {"command": "benchmarks/bench_node_internals.py", **results})


if __name__ == "__main__":
    main()
