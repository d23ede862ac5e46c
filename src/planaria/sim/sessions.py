"""Coordinator sessions for the simulator: open, renew, close, expire by TTL.

Session ids grow and are never reused (a session id is its owner process's incarnation).
A session expires ``ttl_ms`` after the last renewal the coordinator *received*; a renewal
never revives an expired session.
"""

from __future__ import annotations

from dataclasses import dataclass

from planaria.core.controller import SessionView

__all__ = ["Sessions"]


@dataclass
class _Session:
    session: int
    owner: str
    renewed_ms: float
    alive: bool = True


class Sessions:
    def __init__(self, ttl_ms: float) -> None:
        self.ttl_ms = ttl_ms
        self._sessions: dict[int, _Session] = {}
        self._latest: dict[str, int] = {}  # owner -> its newest session
        self._next = 1

    def open(self, owner: str, now_ms: float) -> int:
        session = self._next
        self._next += 1
        self._sessions[session] = _Session(session, owner, now_ms)
        self._latest[owner] = session
        return session

    def renew(self, session: int, now_ms: float) -> bool:
        """True if the session is alive (and now renewed)."""
        state = self._sessions.get(session)
        if state is None or not state.alive:
            return False
        if now_ms >= state.renewed_ms + self.ttl_ms:
            state.alive = False  # expired already, though nobody noticed yet
            return False
        state.renewed_ms = max(state.renewed_ms, now_ms)
        return True

    def close(self, session: int) -> None:
        state = self._sessions.get(session)
        if state is not None:
            state.alive = False

    def expire(self, now_ms: float) -> list[int]:
        """End every session whose TTL ran out; returns their ids."""
        ended = []
        for session in sorted(self._sessions):
            state = self._sessions[session]
            if state.alive and now_ms >= state.renewed_ms + self.ttl_ms:
                state.alive = False
                ended.append(session)
        return ended

    def views(self) -> dict[str, SessionView]:
        """Each owner's newest session, as the controller sees it."""
        views: dict[str, SessionView] = {}
        for owner in sorted(self._latest):
            state = self._sessions[self._latest[owner]]
            views[owner] = SessionView(
                owner, state.session, state.alive, state.renewed_ms, state.renewed_ms + self.ttl_ms
            )
        return views
