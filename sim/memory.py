"""KV-cache capacity: what bounds the batch once the weights are in memory.

Admission reserves a request's whole KV (prompt plus every token it will
generate) up front and releases it when the request finishes. That is the
no-preemption policy of static serving systems (and an upper bound on what a
paged allocator like vLLM's needs at the end of a request); it can never run out
mid-request, so no swapping or recomputation has to be modelled.
"""

from __future__ import annotations

from sim.config import MemoryConfig, ModelConfig, HardwareConfig
from sim.errors import ConfigError, InvariantError
from sim.model_size import kv_bytes_per_token, weight_bytes


class KVMemory:
    def __init__(self, model: ModelConfig, hardware: HardwareConfig, cfg: MemoryConfig, kv_policy):
        self.limited = cfg.limit
        self.per_token = kv_bytes_per_token(model, kv_policy)
        self.overhead = int(round(cfg.request_overhead_mb * 1e6))  # whole bytes: reservations add up exactly
        usable = hardware.memory_gb * 1e9 * cfg.utilization
        self.weights = weight_bytes(model)
        self.capacity = usable - self.weights if cfg.limit else float("inf")
        if self.capacity <= 0:
            raise ConfigError(f"model {model.name} needs {self.weights / 1e9:.1f} GB of weights but "
                              f"{hardware.name} offers {usable / 1e9:.1f} GB (memory.utilization={cfg.utilization})")
        self.in_use = 0
        self.peak = 0

    def request_bytes(self, prompt_len, gen_len):
        """Reserved at admission: KV of the prompt plus every generated token (ints or
        arrays), and the request's fixed overhead (`memory.request_overhead_mb`)."""
        return (prompt_len + gen_len) * self.per_token + self.overhead

    def max_resident(self, prompt_len: int, gen_len: int) -> int:
        """How many requests of this size fit at once: the memory maximum batch."""
        return int(self.capacity // self.request_bytes(prompt_len, gen_len))

    def fits(self, nbytes: int) -> bool:
        return self.in_use + nbytes <= self.capacity

    def reserve(self, nbytes: int) -> None:
        self.in_use += nbytes
        if self.in_use > self.capacity:
            raise InvariantError(f"KV in use {self.in_use} B exceeds capacity {self.capacity:.0f} B")
        self.peak = max(self.peak, self.in_use)

    def release(self, nbytes: int) -> None:
        self.in_use -= nbytes
        if self.in_use < 0:
            raise InvariantError(f"KV in use went negative ({self.in_use} B)")
