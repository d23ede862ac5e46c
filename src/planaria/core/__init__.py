"""Pure, deterministic protocol state machines: messages and time in, effects out."""
