"""Child process for the real crash tests (run as a script, killed with SIGKILL).

``crash_child.py append DIR WRITERS``: appends through a GroupCommitter with fsync ``always``
from WRITERS concurrent tasks, printing ``<index> <record>`` after each acknowledgement.
``crash_child.py hold DIR``: opens the log, prints ``open``, and waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys

from planaria.storage import GroupCommitter, OsFS, PartitionLog


async def append_forever(directory: str, writers: int) -> None:
    log = PartitionLog.open(OsFS(), directory)
    if log.epoch == 0:
        log.set_epoch(1)
    async with GroupCommitter() as committer:

        async def writer(task: int) -> None:
            sequence = 0
            while True:
                record = b"t%d-s%d-" % (task, sequence) + b"v" * (sequence % 50)
                index = await committer.append(log, 1, record)
                sys.stdout.write(f"{index} {record.decode()}\n")
                sys.stdout.flush()
                sequence += 1

        await asyncio.gather(*(writer(task) for task in range(writers)))


def main(argv: list[str]) -> None:
    mode, directory = argv[0], argv[1]
    if mode == "append":
        asyncio.run(append_forever(directory, int(argv[2])))
    elif mode == "hold":
        PartitionLog.open(OsFS(), directory)
        print("open", flush=True)
        sys.stdin.read()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
