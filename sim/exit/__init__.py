"""The exit policies: at which loop each token leaves. Each module of this package is one
policy registered with `sim.registry.exit_registry`, which imports them all on first use;
look a policy up there, never in a list here. What every policy shares is in `base`."""

from sim.exit.base import Exits, apply_exit_policy, decided_live, exits_early

__all__ = ["Exits", "apply_exit_policy", "decided_live", "exits_early"]
