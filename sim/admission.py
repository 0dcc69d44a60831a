"""The request queue: who has arrived, who waits, who joins next and whether its KV fits.

Admission reserves a request's whole KV up front (sim/memory.py), so the queue is the
one place that asks the memory whether a request may join. Requests join in arrival
order (FIFO, no overtaking) unless a scheduler supplies an `order` over the arrived,
waiting ones. The prompts of the requests placed since the last step are kept here
until that step prefills them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sim.errors import ConfigError
from sim.memory import KVMemory
from sim.workload import Workload

# Admission order: given the arrived, waiting requests (indices, arrival order), the
# order in which they are offered free slots. None: FIFO, on a faster path.
AdmissionOrder = Callable[[np.ndarray], np.ndarray]


class RequestQueue:
    def __init__(self, wl: Workload, memory: KVMemory):
        self.arrival = wl.arrival
        self.prompt_len = wl.prompt_len
        self.n_requests = wl.num_requests
        self.memory = memory
        self.need = memory.request_bytes(wl.prompt_len, wl.gen_len)  # KV reserved per request
        if memory.limited and wl.num_requests:
            worst = int(np.argmax(self.need))
            if self.need[worst] > memory.capacity:
                raise ConfigError(
                    f"request {worst} needs {self.need[worst] / 1e9:.2f} GB of KV cache "
                    f"({wl.prompt_len[worst]} prompt + {wl.gen_len[worst]} generated tokens) but only "
                    f"{memory.capacity / 1e9:.2f} GB are free after the weights: it can never run")
        self.order: AdmissionOrder | None = None  # set by a scheduler that reorders admission
        self._now = 0.0  # time of the last admission attempt
        self.next_req = 0  # every request before it has been admitted
        self.waiting = np.ones(self.n_requests, dtype=bool)  # not admitted yet (for a reordered admission)
        self.prefill: list[int] = []  # prompt lengths placed since the last step
        self.prefill_req: list[int] = []  # the same admissions, as request indices

    def next_arrival(self) -> float | None:
        """When the next request arrives that has not arrived yet (None: all have)."""
        if self.order is None:
            return float(self.arrival[self.next_req]) if self.next_req < self.n_requests else None
        r = max(self.next_req, int(np.searchsorted(self.arrival, self._now, side="right")))
        return float(self.arrival[r]) if r < self.n_requests else None

    def ready(self, now: float) -> bool:
        """Whether a request has arrived by `now` and waits (a cheap test before `take`)."""
        self._now = now
        r = self.next_req
        return r < self.n_requests and self.arrival[r] <= now

    def take(self, now: float, free: np.ndarray) -> list[tuple[int, int]]:
        """(slot, request) for each free slot filled at `now`, in admission order, until one
        does not fit; their KV is reserved and their prompts wait for the next step."""
        if self.order is None:
            candidates = None
        else:
            arrived = int(np.searchsorted(self.arrival, now, side="right"))
            r = self.next_req
            candidates = self.order(r + np.flatnonzero(self.waiting[r:arrived]))
        placed = []
        for i, s in enumerate(free.tolist()):
            if candidates is None:
                r = self.next_req
                if r >= self.n_requests or self.arrival[r] > now:
                    break
            elif i < candidates.size:
                r = int(candidates[i])
            else:
                break
            if not self.memory.fits(self.need[r]):
                break
            self._take(r)
            placed.append((s, r))
        return placed

    def _take(self, r: int) -> None:
        self.memory.reserve(int(self.need[r]))
        self.waiting[r] = False
        if r == self.next_req:
            nxt = r + 1
            while nxt < self.n_requests and not self.waiting[nxt]:
                nxt += 1
            self.next_req = nxt
        self.prefill.append(int(self.prompt_len[r]))
        self.prefill_req.append(r)

    def release(self, requests: np.ndarray) -> None:
        """Finished requests give their KV back."""
        self.memory.release(int(self.need[requests].sum()))

    def prefilled(self) -> tuple[list[int], list[int]]:
        """The prompts the coming step prefills (lengths, requests); the queue forgets them."""
        lens, reqs = self.prefill, self.prefill_req
        self.prefill, self.prefill_req = [], []
        return lens, reqs
