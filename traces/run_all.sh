#!/usr/bin/env bash
# Uptrain the three bundled relaxed recursive SmolLM2-135M models, then record
# their traces into traces/data/. Budgets are token counts, so the sequence is
# the one behind the bundled traces whatever the machine's speed (the text pool
# in ~/.cache/rrtsim/textpool/ grows by seeded shards in the same order).
# Every step resumes: rerunning this script after an interruption continues
# where it stopped (a finished stage just re-saves and exits).
#
#   nohup bash traces/run_all.sh > runs/run_all.log 2>&1 &
#
# The two older models take about 2.5 hours on 2 free CPU cores (THREADS=2); the default
# one (1.1M tokens) about 2.8 hours more where the CPU has AVX-512 bf16 (measured on an
# AMD EPYC without AMX), longer without bf16 units (fp32 then; traces/README.md,
# "Without bf16 units"). DEVICE=cuda runs the same
# sequence on a GPU; a GPU run aiming at 0.6 agreement is the command in
# traces/README.md instead.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}; THREADS=${THREADS:-2}
# The recipe of the bundled traces predates bf16 training, self-distillation and the
# tail-at-every-exit semantics (traces/recursive.py); the flags below restore what can be.
COMMON="device=$DEVICE threads=$THREADS lora_rank=64 init=average max_minutes=100000 amp=false teacher_dtype=float32 exit_weight_self=0"
R2="name=r2_mc_r64_long num_loops=2 prelude_layers=1 coda_layers=1 $COMMON"
R3="name=r3_mc_r64 num_loops=3 prelude_layers=1 coda_layers=2 $COMMON"
# 2 loops, stage 1: batch 2 x 256, lr 3e-4, a pool shard of 32 answers every 40 steps
python -m traces.uptrain $R2 max_tokens=87040
# 3 loops: on the 34k-token pool stage 1 grew, no new shards
python -m traces.uptrain $R3 refresh_every=0 max_tokens=61440
# 2 loops, stage 1 continued to step 200 (the recorded run stopped before its step-200 shard),
# then stage 2: batch 8, lr 4e-4, a shard of 64 answers every 10 steps
python -m traces.uptrain $R2 refresh_every=0 max_tokens=102400
python -m traces.uptrain $R2 batch=8 lr=4e-4 eval_every=20 refresh_every=10 refresh_batch=64 max_tokens=389120
# The default trace's model: today's recipe (amp/teacher_dtype auto, self-distillation
# 0.25, exits through the coda), batch 2 x 256, a shard of 64 answers every 80 steps, in two
# phases, each ending with a linear decay of the lr to zero: lr 3e-4 to 650k tokens, then
# (resumed) 1.5e-4 to 1.1M. The recorded run started from a 224k-token pool (22 shards left
# by earlier runs on its machine); here it starts from what the stages above left, so its
# text and curve differ somewhat.
DEFAULT="name=r2_mc_r64_b2 num_loops=2 prelude_layers=1 coda_layers=1 device=$DEVICE threads=$THREADS lora_rank=64 max_minutes=100000 batch=2 seq_len=256 exit_weight_self=0.25 eval_every=80 refresh_every=80 refresh_batch=64"
python -m traces.uptrain $DEFAULT lr=3e-4 max_tokens=650000 decay_tokens=300000
python -m traces.uptrain $DEFAULT lr=1.5e-4 max_tokens=1100000 decay_tokens=450000
if [ "${RECORD:-1}" = 1 ]; then
  python -m traces.record checkpoint=runs/uptrain/r2_mc_r64_b2/best.pt name=smollm2_r2_mc_r64_coda overwrite=true device=$DEVICE threads=$THREADS max_new=128
  python -m traces.record checkpoint=runs/uptrain/r2_mc_r64_long/best.pt name=smollm2_r2_mc_r64 overwrite=true device=$DEVICE threads=$THREADS max_new=128
  python -m traces.record checkpoint=runs/uptrain/r3_mc_r64/best.pt name=smollm2_r3_mc_r64 overwrite=true device=$DEVICE threads=$THREADS max_new=128
fi
