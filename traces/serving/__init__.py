"""The real backend of the engine, one module per job.

- `inputs`: the model of a sim layout, and each request's token ids;
- `weights`: a `RecursiveLM` packed for serving (fused linears, per-loop norms and LoRA, RoPE table);
- `layer`: the one decoder-layer function prefill and decode both run;
- `kv`: the typed per-loop KV cache, and which KV policies run for real;
- `runner`: one engine step (`StepBatch`) executed on the caches;
- `clock`: `RealSteps`, the engine's `StepClock`: runs a step, times it, logs it.

Submodules are imported explicitly (`from traces.serving.clock import RealSteps`) so that
`traces.serving.inputs` stays importable for what does not run the model.
"""
