"""Real per-token exit traces from a relaxed recursive SmolLM2-135M.

Modules, one job each:
  base_model  - load the original model (GGUF offline default), fp32 cache
  llama       - a small, explicit Llama-family forward (weights copied from HF)
  recursive   - conversion to a (relaxed) Recursive Transformer + per-loop exits
  prompts     - the bundled prompt set and its fixed train / held-out split
  textpool    - teacher-generated training text (no download), cached on disk
  uptrain     - distillation + early-exit uptraining, checkpoint / resume
  record      - batched greedy generation that writes the Parquet trace
"""
