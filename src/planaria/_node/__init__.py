"""Private parts of :mod:`planaria.node`: the partition runtime, the peer bus, the lease."""
