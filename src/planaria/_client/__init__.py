"""Private parts of :mod:`planaria.client`: wire encoding, the slot map, connections."""
