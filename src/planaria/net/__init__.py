"""The network layer: RESP for clients (:mod:`.resp`, :mod:`.commands`, :mod:`.topology`,
:mod:`.server`) and length-prefixed msgpack frames between nodes (:mod:`.frame`).

These modules know nothing about the node that wires them to the replication core: the
server hands parsed requests to a pluggable handler and writes back the bytes it returns.
"""
