"""``sync="adaptive"``: spin on a request's end event about as long as it should take, then sleep.

A base class of :class:`~edgert.session._cuda_runner.CudaRunner` (which sets the attributes
declared here). The spin polls a plain end event through a ctypes ``cuEventQuery`` where
libcuda loads (:func:`edgert.cuda._api.event_query_fn`), else through the runtime bindings; the
sleep is a blocking-sync event recorded behind the request's end event on a side stream.
"""

from __future__ import annotations

import time
from typing import Any

from edgert.cuda import Event, Stream

__all__ = ["ADAPTIVE_SPIN_MAX_NS", "ADAPTIVE_SPIN_MIN_NS", "AdaptiveSync"]

_now = time.perf_counter_ns
_NOT_READY = 600  # cudaErrorNotReady / CUDA_ERROR_NOT_READY
# sync="adaptive": spin for SPIN_FACTOR x the learned completion time (time from the end of
# the enqueue to the request's completion, an exponential average over about 8 requests) plus
# SPIN_MARGIN_NS, within [ADAPTIVE_SPIN_MIN_NS, ADAPTIVE_SPIN_MAX_NS]; then sleep on a
# blocking-sync event recorded behind the request's (plain) end event on a side stream. A
# blocking wake-up costs 15-40 us (H200, issue 15), so past the cap a request loses at most a
# few percent by sleeping, and a stalled device never pins the core. The margin is about one
# wake-up (the ski-rental rule: spin past the expected time for as long as giving up would
# cost): with 10 us, the requests of the slowest percent at batch 64 slept and paid a wake-up,
# which put the defaults' p99 at 1.21x the spinning recipe on the H200.
ADAPTIVE_SPIN_MIN_NS = 20_000
ADAPTIVE_SPIN_MAX_NS = 2_000_000
_SPIN_FACTOR_NUM, _SPIN_FACTOR_DEN = 3, 2
_SPIN_MARGIN_NS = 25_000


class AdaptiveSync:
    """The adaptive wait (see the module documentation)."""

    expect_ns: int  # learned completion time after the enqueue
    spin_budget_ns: int
    slept: int  # adaptive waits that ran past their spin and slept
    fast_query: Any
    ev_query: Any
    ev_sync: Any
    stream_wait: Any
    rec: Any
    stream: Stream
    _sleeper: tuple[Stream, Any] | None

    def _adaptive_wait(self, ev: Any) -> Any:
        """Spin on ``ev`` for the learned completion time, then sleep on it (blocking-sync).

        Returns the CUDA error of the wait (0/cudaSuccess when the request completed).
        """
        t0 = _now()
        budget = self.spin_budget_ns
        fast = self.fast_query
        if fast is not None:
            handle = int(ev)
            while True:
                res = fast(handle)
                if res == 0:
                    err: Any = 0
                    break
                if res != _NOT_READY:
                    err = self.ev_query(ev)[0]  # the failure in the runtime's words
                    break
                if _now() - t0 > budget:
                    err = self._sleep_on(ev)
                    break
        else:
            query = self.ev_query
            while True:
                err = query(ev)[0]
                if not err or int(err) != _NOT_READY:
                    break
                if _now() - t0 > budget:
                    err = self._sleep_on(ev)
                    break
        waited = _now() - t0
        expect = self.expect_ns + ((waited - self.expect_ns) >> 3)
        self.expect_ns = expect
        budget = expect * _SPIN_FACTOR_NUM // _SPIN_FACTOR_DEN + _SPIN_MARGIN_NS
        # comparisons, not min()/max(): this runs once per request
        if budget > ADAPTIVE_SPIN_MAX_NS:
            budget = ADAPTIVE_SPIN_MAX_NS
        elif budget < ADAPTIVE_SPIN_MIN_NS:
            budget = ADAPTIVE_SPIN_MIN_NS
        self.spin_budget_ns = budget
        return err

    def _sleep_on(self, ev: Any) -> Any:
        """Sleep until ``ev`` completes: a blocking-sync event recorded behind it, waited on.

        The side stream only waits for ``ev`` and records; made on first use, so sessions whose
        requests always finish within their spin never make it.
        """
        self.slept += 1
        sleeper = self._sleeper
        if sleeper is None:
            side = Stream(device=self.stream.device)
            try:
                blocking = Event(blocking_sync=True, device=side.device)
            except BaseException:
                side.close()  # not left to the garbage collector (found by review)
                raise
            sleeper = self._sleeper = (side, blocking)
        side, blocking = sleeper
        err = self.stream_wait(side.raw, ev, 0)[0]
        if not err:
            err = self.rec(blocking.raw, side.raw)[0]
        if not err:
            err = self.ev_sync(blocking.raw)[0]
        if err:  # the sleep could not be set up: wait on the request's own event
            err = self.ev_sync(ev)[0]
        return err
