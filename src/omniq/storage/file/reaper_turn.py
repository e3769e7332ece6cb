"""Who sweeps a bucket for expired leases: the holder of the reaper turn, ``<tasks>/.reaper``.

Sweeping lists every ``running/`` folder, so on object stores one consumer at a time does it for
the fleet. The turn is a small object its holder rewrites every reap interval, by
compare-and-swap on the version it wrote (one PUT, no read). The others look at it now and then
and take it over (CAS) once they have seen the same version for two of the longest intervals:
lapse is judged by each consumer's own monotonic clock, never by comparing clocks across
machines, so a skewed clock cannot make the turn change hands.

The record also carries what the sweeps depend on: the shortest reap interval and the shortest
lease that the consumers which looked at the turn know of, and when the fleet last read every
lease. A consumer that needs shorter sweeps, or granted a shorter lease, takes the turn over and
writes the smaller values of both, so the sweeps run as often, and read leases as early, as the
most demanding consumer needs; a holder that lapsed takes its demands with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from omniq.models._time import utcnow_ms
from omniq.storage.file.cloud import ConflictError
from omniq.storage.file.objects import ObjectStore, VersionMismatch
from omniq.storage.lifecycle import lease_token

__all__ = ["ReaperTurn", "TurnRecord"]


class TurnRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The content of ``.reaper``. Older versions wrote and read ``token`` and ``expires_ms``
    only (their decoder skips the other fields), and took the turn once ``expires_ms`` passed."""

    token: str
    expires_ms: int
    interval_ms: int = 0  # the sweep interval its holder keeps (0: not said)
    shortest_lease_ms: int = 0  # the shortest lease its holder knows of (0: none known)
    full_sweep_ms: int = 0  # when a sweep last read every lease (0: never)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TurnRecord).decode


def _least(a: int, b: int) -> int:
    """The smaller of two values where 0 means "not known"."""
    return min(a, b) if a and b else a or b


class ReaperTurn:
    """One consumer's view of the reaper turn of a ``tasks`` folder."""

    #: Added to two of the longest intervals before an unchanged turn counts as lapsed: a
    #: holder's renewal can be late by a slow request or a busy event loop.
    GRACE_SECONDS = 1.0
    #: How often the holder's sweep reads every lease, whatever the listing says.
    FULL_SWEEP_SECONDS = 60.0

    def __init__(
        self,
        objects: ObjectStore,
        tasks_dir: str,
        interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects = objects
        self.key = f"{tasks_dir}/.reaper"
        self._token = lease_token()
        self._monotonic = monotonic
        self._own_interval_ms = max(1, int(interval * 1000))
        self.interval_ms = self._own_interval_ms  # the one the sweeps keep (maybe another's)
        self._own_lease_ms = 0  # the shortest lease this consumer granted (0: none yet)
        self.shortest_lease_ms = 0  # the one the sweeps use (maybe another consumer's)
        self.full_sweep_ms = 0  # the fleet's last full sweep, as the turn recorded it
        self._version: str | None = None  # the turn's version while this consumer holds it
        self._renewed_at = 0.0  # monotonic time of the holder's last renewal
        self._seen: tuple[str, float] | None = None  # another's version, first seen when
        self._next_look = 0.0  # monotonic time to look at another's turn again

    @property
    def interval(self) -> float:
        """Seconds between two sweeps (or two looks at the turn)."""
        return self.interval_ms / 1000

    @property
    def held(self) -> bool:
        return self._version is not None

    def learn_lease(self, seconds: float) -> None:
        """This consumer granted (or renewed) a lease of ``seconds``."""
        lease_ms = max(1, int(seconds * 1000))
        if not self._own_lease_ms or lease_ms < self._own_lease_ms:
            self._own_lease_ms = lease_ms
            self.shortest_lease_ms = _least(self.shortest_lease_ms, lease_ms)
            self._next_look = 0.0  # look at the turn next time: it may need telling

    def full_sweep_due(self) -> bool:
        """Whether the fleet's last sweep that read every lease is a minute old (or unknown),
        by this consumer's clock; if so it is recorded as starting now."""
        now_ms = utcnow_ms()
        if 0 <= now_ms - self.full_sweep_ms < self.FULL_SWEEP_SECONDS * 1000:
            return False
        self.full_sweep_ms = now_ms
        return True

    def renewal_due(self) -> bool:
        """Whether the holder should renew the turn now (during a long sweep, say)."""
        return self._monotonic() - self._renewed_at >= self.interval

    def _record(self, now_ms: int) -> bytes:
        return _encode(TurnRecord(
            token=self._token, expires_ms=now_ms + 2 * self.interval_ms,
            interval_ms=self.interval_ms, shortest_lease_ms=self.shortest_lease_ms,
            full_sweep_ms=self.full_sweep_ms,
        ))  # fmt: skip

    def _adopt(self, turn: TurnRecord | None, *, demands: bool) -> None:
        """This consumer's own values, with the turn's smaller ones where its demands stay."""
        self.interval_ms, self.shortest_lease_ms = self._own_interval_ms, self._own_lease_ms
        if turn is None:
            return
        self.full_sweep_ms = max(self.full_sweep_ms, turn.full_sweep_ms)
        if demands:
            if turn.interval_ms:
                self.interval_ms = min(self.interval_ms, turn.interval_ms)
            self.shortest_lease_ms = _least(self.shortest_lease_ms, turn.shortest_lease_ms)

    def _demands_more(self, turn: TurnRecord) -> bool:
        """Whether this consumer needs shorter sweeps, or earlier reads, than ``turn`` gives."""
        shorter_interval = bool(turn.interval_ms) and self._own_interval_ms < turn.interval_ms
        shorter_lease = bool(self._own_lease_ms) and (
            not turn.shortest_lease_ms or self._own_lease_ms < turn.shortest_lease_ms
        )
        return shorter_interval or shorter_lease

    def _lapsed(self, version: str, turn: TurnRecord | None, now: float) -> bool:
        """Whether another's turn has kept ``version`` for two of the longest intervals (by
        this consumer's clock). The first sight of a version starts the count."""
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, now)
            return turn is None  # unreadable: take it over
        interval_ms = max(turn.interval_ms if turn else 0, self._own_interval_ms)
        return now - self._seen[1] >= 2 * interval_ms / 1000 + self.GRACE_SECONDS

    async def take(self) -> bool:
        """Hold the turn for the next interval: ``True`` if this consumer sweeps now."""
        now, now_ms = self._monotonic(), utcnow_ms()
        if self._version is not None:
            try:
                self._version = await self._objects.replace(
                    self.key, self._record(now_ms), self._version
                )
                self._renewed_at = now
                return True
            except (VersionMismatch, FileNotFoundError):  # changed hands (or the answer to
                self._version, self._next_look = None, 0.0  # a renewal that landed was lost)
            except ConflictError:
                return False  # busy: still ours, renewed at the next interval
        if now < self._next_look:
            return False
        # Two looks the lapse time apart tell a lapsed turn: a holder renews every interval.
        self._next_look = now + 2 * self._own_interval_ms / 1000 + self.GRACE_SECONDS
        try:
            data, version = await self._objects.get_versioned(self.key)
        except FileNotFoundError:
            self._adopt(None, demands=False)
            try:
                self._version = await self._objects.create(self.key, self._record(now_ms))
            except (FileExistsError, ConflictError):  # taken, or busy: not this turn
                return False
            self._renewed_at = now
            return True
        try:
            turn: TurnRecord | None = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            turn = None
        ours = turn is not None and turn.token == self._token  # a renewal answered by an error
        demands = turn is not None and not ours and self._demands_more(turn)
        if not (ours or demands or self._lapsed(version, turn, now)):
            return False
        self._adopt(turn, demands=demands or ours)
        try:
            self._version = await self._objects.replace(self.key, self._record(now_ms), version)
        except (VersionMismatch, ConflictError):
            return False
        self._renewed_at, self._seen = now, None
        return True
