"""Static (request-level) batching, as FasterTransformer: a batch is formed, decoded
until its longest request finishes (finished requests idle in their slots), and
only then is the next batch formed. No early exit."""

from sim.registry import scheduler_registry
from sim.schedulers.base import IterationScheduler


@scheduler_registry.register("static", label="static", color="#E69F00", order=0, baseline_of=("sweep",),
                             validated=True)
class StaticScheduler(IterationScheduler):
    honours_exits = False

    def refill(self, now: float) -> None:
        if self.state.active().size == 0:
            self.state.admit(now)
