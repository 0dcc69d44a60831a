#!/usr/bin/env bash
# Uptrain the two bundled relaxed recursive SmolLM2-135M models, then record
# their traces into traces/data/. Each step resumes: rerunning this script
# after an interruption continues where it stopped (uptraining continues the
# same budget from last.pt; a finished run just re-saves and exits).
#
#   nohup bash traces/run_all.sh > runs/run_all.log 2>&1 &
#
# SKIP2=1 / SKIP3=1 skip a training stage; EXTRA2 / EXTRA3 add overrides to one.
# Budgets (minutes of training wall clock) and device come from the
# environment, e.g. on a GPU:  DEVICE=cuda MIN2=600 MIN3=600 THREADS=8 bash traces/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}; THREADS=${THREADS:-1}
MIN2=${MIN2:-52}; MIN3=${MIN3:-42}
COMMON="device=$DEVICE threads=$THREADS lora_rank=64 init=average ${EXTRA:-}"
[ "${SKIP2:-0}" = 1 ] || python -m traces.uptrain name=r2_mc_r64 num_loops=2 head=1 tail=1 max_minutes=$MIN2 $COMMON ${EXTRA2:-}
[ "${SKIP3:-0}" = 1 ] || python -m traces.uptrain name=r3_mc_r64 num_loops=3 head=1 tail=2 max_minutes=$MIN3 $COMMON ${EXTRA3:-}
if [ "${RECORD:-1}" = 1 ]; then
  python -m traces.record checkpoint=runs/uptrain/r2_mc_r64/best.pt name=smollm2_r2_mc_r64 device=$DEVICE threads=$THREADS ${REC_EXTRA:-}
  python -m traces.record checkpoint=runs/uptrain/r3_mc_r64/best.pt name=smollm2_r3_mc_r64 device=$DEVICE threads=$THREADS ${REC_EXTRA:-}
fi
