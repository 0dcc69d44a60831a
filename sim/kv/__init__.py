"""The KV policies: what a token that exits early does about the KV of the loops it
skipped. Each module of this package is one policy registered with
`sim.registry.kv_registry`, which imports them all on first use; look a policy up there
(`kv_policy(name)`), never in a list here. The `KVPolicy` base is in `base`."""

from sim.kv.base import KVPolicy, kv_policy, real_kv_policies

__all__ = ["KVPolicy", "kv_policy", "real_kv_policies"]
