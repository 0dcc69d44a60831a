"""Which compute dtype pays on this device: ``auto`` resolves to bf16 only where the
hardware has bf16 arithmetic, fp32 elsewhere.

Why: where the CPU computes bf16 the bf16 training recipe runs 2.4x the tokens/s of fp32
with AMX (a Xeon) and 1.8x with AVX-512 bf16 alone (an AMD EPYC), but on an AVX-512 CPU
without either (an Ice Lake Xeon) PyTorch emulates bf16 and
the same recipe runs 3.7x *slower* than fp32, and real serving steps 1.5x slower
(``traces/README.md``, training speed; docs/validation.md, real execution). A hard-coded bf16 default
is right on one machine and ruinous on the next, and the project's machines change
between sessions.
"""
from __future__ import annotations

import sys
from functools import lru_cache

from sim.errors import ConfigError

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_native(device: str = "cpu") -> tuple[bool, str]:
    """(does `device` compute in bf16 natively, why), the reason written for a log line."""
    if str(device).startswith("cuda"):
        import torch

        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA bf16" if ok else "this GPU has no bf16"
    have = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    if have:
        return True, f"CPU has {'/'.join(have)}"
    return False, f"CPU has none of {'/'.join(BF16_CPU_FLAGS)} (bf16 would be emulated)"


def resolve_dtype(name: str, device: str = "cpu") -> tuple[str, str]:
    """`auto` -> 'bfloat16' or 'float32' for this device; explicit names pass through.
    Returns (dtype name, reason)."""
    if name != "auto":
        if name not in ("bfloat16", "float32"):
            raise ConfigError(f"dtype must be auto, bfloat16 or float32, not {name!r}")
        return name, "asked for"
    ok, why = bf16_native(device)
    return ("bfloat16" if ok else "float32"), why


def resolve_amp(amp, device: str = "cpu") -> tuple[bool, str]:
    """The uptrain ``amp`` key: true / false / auto (bf16 autocast where it is native)."""
    if isinstance(amp, bool):
        return amp, "asked for"
    if str(amp).lower() != "auto":
        raise ConfigError(f"amp must be true, false or auto, not {amp!r}")
    return bf16_native(device)


def add_dtype_option(ap) -> None:
    ap.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                    help="compute dtype (auto: bf16 where the hardware computes it natively)")


def dtype_from_args(args) -> str:
    """Resolve a parsed ``--dtype`` for ``args.device``, saying on stderr what auto chose."""
    name, why = resolve_dtype(args.dtype, args.device)
    if args.dtype == "auto":
        print(f"dtype {name} ({why})", file=sys.stderr)
    return name
