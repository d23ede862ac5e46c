"""Keys to slots to partitions, exactly as Redis Cluster maps keys to slots.

keyslot(key) = CRC16-XMODEM(key) mod 16384, hashing only the ``{tag}`` when the key has a
non-empty one, so existing cluster clients route correctly and keys sharing a tag share a
slot. Slots map to partitions by contiguous ranges: partition p owns slots
``[p * 16384 // P, (p + 1) * 16384 // P)``.
"""

from __future__ import annotations

from binascii import crc_hqx  # CRC-16/XMODEM (poly 0x1021, init 0), in C

from planaria.errors import UsageError

__all__ = ["SLOTS", "hash_tag", "keyslot", "partition_of_slot", "slot_range"]

SLOTS = 16384


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that is hashed: the first ``{...}`` if non-empty, else the key."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def keyslot(key: str | bytes) -> int:
    """The Redis Cluster slot of ``key`` (0..16383)."""
    if isinstance(key, str):
        key = key.encode()
    elif not isinstance(key, (bytes, bytearray, memoryview)):
        raise UsageError(f"key must be str or bytes, not {type(key).__name__}")
    return crc_hqx(hash_tag(bytes(key)), 0) & (SLOTS - 1)


def _check_partitions(partitions: int) -> None:
    if not 1 <= partitions <= SLOTS:
        raise UsageError(f"partitions must be in 1..{SLOTS}, got {partitions}")


def partition_of_slot(slot: int, partitions: int) -> int:
    """The partition owning ``slot`` when the slots are cut into ``partitions`` ranges."""
    _check_partitions(partitions)
    if not 0 <= slot < SLOTS:
        raise UsageError(f"slot must be in 0..{SLOTS - 1}, got {slot}")
    # Inverse of the range starts p * SLOTS // partitions (checked exhaustively in the tests).
    return ((slot + 1) * partitions - 1) // SLOTS


def slot_range(partition: int, partitions: int) -> range:
    """The contiguous slots owned by ``partition``."""
    _check_partitions(partitions)
    if not 0 <= partition < partitions:
        raise UsageError(f"partition must be in 0..{partitions - 1}, got {partition}")
    return range(partition * SLOTS // partitions, (partition + 1) * SLOTS // partitions)
