"""Static (request-level) batching, as FasterTransformer: a batch is formed, decoded
until its longest request finishes (finished requests idle in their slots), and
only then is the next batch formed. No early exit."""

from sim.schedulers.base import IterationScheduler


class StaticScheduler(IterationScheduler):
    name = "static"
    honours_exits = False

    def refill(self, now: float) -> None:
        if self.state.active().size == 0:
            self.state.admit(now)
