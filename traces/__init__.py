"""Real per-token exit traces from a relaxed recursive SmolLM2-135M.

Modules, one job each:
  base_model  - load the original model (GGUF offline default), fp32 cache
  llama       - a small, explicit Llama-family forward (weights copied from HF)
  recursive   - conversion to a (relaxed) Recursive Transformer + per-loop exits
  prompts     - the bundled prompt set and its fixed train / held-out split
  textpool    - teacher-generated training text (no download), cached on disk
  uptrain     - distillation + early-exit uptraining, checkpoint / resume
  record      - batched greedy generation that writes the Parquet trace
  serving/    - the engine's real backend (docs/executor.md): RealSteps runs each engine step
                on the model; also the model of a sim layout and each request's tokens
  execute     - `python -m traces.execute`: a sim.run workload executed for real
  profile_steps - measured step times over a grid of loads -> a cost=profiled profile
  validate    - profile + real runs + simulations -> figures/data/sim_vs_real.csv
  bench_generate - the executor against transformers' generate (vanilla model)
  quiet       - pinning and pausing the background job around timed runs
  cli         - the commands' conventions: one style each, one-line errors before any model loads
  allocator   - re-exec training-sized commands under tcmalloc (glibc page-faults big buffers)
"""
