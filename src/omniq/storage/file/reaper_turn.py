"""Who sweeps a bucket for expired leases: the holder of the reaper turn, ``<tasks>/.reaper``.

Sweeping lists every ``running/`` folder, so on object stores one consumer at a time does it for
the fleet. The turn is a small object that names its holder and how long it holds it. The
holder keeps it, renewing it by compare-and-swap on the version it wrote (no read) for two
reap intervals at a time; the others remember when it could lapse and read it only then.

The record also carries what the sweep depends on: the shortest reap interval and the shortest
lease any consumer that looked at the turn knows of. A consumer that knows a shorter one takes
the turn over (CAS) and writes the smaller values, so the sweep runs as often, and reads
leases as early, as the most demanding live consumer needs; values of a holder that lapsed are
not carried on.
"""

from __future__ import annotations

import msgspec

from omniq.models._time import utcnow_ms
from omniq.storage.file.cloud import ConflictError
from omniq.storage.file.objects import ObjectStore, VersionMismatch
from omniq.storage.lifecycle import lease_token

__all__ = ["ReaperTurn", "TurnRecord"]


class TurnRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The content of ``.reaper``. Older versions wrote ``token`` and ``expires_ms`` only (and
    read only those: the other fields are skipped by their decoder)."""

    token: str
    expires_ms: int
    interval_ms: int = 0  # the sweep interval its holder keeps (0: not said)
    shortest_lease_ms: int = 0  # the shortest lease its holder knows of (0: none known)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TurnRecord).decode


class ReaperTurn:
    """One consumer's view of the reaper turn of a ``tasks`` folder."""

    #: An expiry further ahead than two of the longest intervals plus this is not a holder's
    #: (a stray object, or a clock hours ahead): the turn is taken over rather than waited for.
    SKEW_MS = 60_000

    def __init__(self, objects: ObjectStore, tasks_dir: str, interval: float) -> None:
        self._objects = objects
        self.key = f"{tasks_dir}/.reaper"
        self._token = lease_token()
        self._own_interval_ms = max(1, int(interval * 1000))
        self.interval_ms = self._own_interval_ms  # the one the sweeps keep (maybe another's)
        self._own_lease_ms = 0  # the shortest lease this consumer granted (0: none yet)
        self.shortest_lease_ms = 0  # the one the sweeps use (maybe another consumer's)
        self._version: str | None = None  # the turn's version while this consumer holds it
        self._lapses_ms = 0  # when the turn another consumer holds could lapse

    @property
    def interval(self) -> float:
        """Seconds between two sweeps (or two looks at the turn)."""
        return self.interval_ms / 1000

    def learn_lease(self, seconds: float) -> None:
        """This consumer granted (or renewed) a lease of ``seconds``."""
        lease_ms = max(1, int(seconds * 1000))
        if not self._own_lease_ms or lease_ms < self._own_lease_ms:
            self._own_lease_ms = lease_ms
            self._lapses_ms = 0  # look at the turn next time: it may need telling
            if not self.shortest_lease_ms or lease_ms < self.shortest_lease_ms:
                self.shortest_lease_ms = lease_ms

    def _record(self, now_ms: int) -> bytes:
        return _encode(TurnRecord(
            token=self._token, expires_ms=now_ms + 2 * self.interval_ms,
            interval_ms=self.interval_ms, shortest_lease_ms=self.shortest_lease_ms,
        ))  # fmt: skip

    def _reset(self) -> None:
        """Back to this consumer's own values (it takes over from a lapsed holder)."""
        self.interval_ms, self.shortest_lease_ms = self._own_interval_ms, self._own_lease_ms

    def _demands_more(self, turn: TurnRecord) -> bool:
        """Whether this consumer needs shorter sweeps, or earlier reads, than ``turn`` gives;
        if so it adopts the turn's values where those are the smaller ones."""
        shorter_interval = bool(turn.interval_ms) and self._own_interval_ms < turn.interval_ms
        shorter_lease = bool(self._own_lease_ms) and (
            not turn.shortest_lease_ms or self._own_lease_ms < turn.shortest_lease_ms
        )
        if not (shorter_interval or shorter_lease):
            return False
        self._reset()
        if turn.interval_ms:
            self.interval_ms = min(self.interval_ms, turn.interval_ms)
        if turn.shortest_lease_ms:
            self.shortest_lease_ms = min(self.shortest_lease_ms, turn.shortest_lease_ms)
        return True

    async def take(self) -> bool:
        """Hold the turn for the next interval: ``True`` if this consumer sweeps now."""
        now_ms = utcnow_ms()
        if self._version is not None:
            try:
                self._version = await self._objects.replace(
                    self.key, self._record(now_ms), self._version
                )
                return True
            except (VersionMismatch, FileNotFoundError):  # it lapsed and changed hands
                self._version = None
            except ConflictError:
                return False  # busy: still ours, renewed at the next interval
        if now_ms < self._lapses_ms:
            return False
        try:
            data, version = await self._objects.get_versioned(self.key)
        except FileNotFoundError:
            self._reset()
            try:
                self._version = await self._objects.create(self.key, self._record(now_ms))
                return True
            except (FileExistsError, ConflictError):  # taken, or busy: not this turn
                return False
        try:
            turn: TurnRecord | None = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            turn = None  # unreadable: take it over
        if turn is not None and turn.token != self._token:
            longest = 2 * max(turn.interval_ms, self._own_interval_ms) + self.SKEW_MS
            if now_ms < turn.expires_ms <= now_ms + longest:
                if not self._demands_more(turn):
                    self._lapses_ms = min(turn.expires_ms, now_ms + 2 * self._own_interval_ms)
                    return False
            else:
                self._reset()  # lapsed (or a bogus expiry): its holder's values go with it
        # Ours already (a renewal that was written but answered with an error), or ours now.
        try:
            self._version = await self._objects.replace(self.key, self._record(now_ms), version)
        except (VersionMismatch, ConflictError):
            return False
        return True
