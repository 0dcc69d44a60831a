"""`python -m traces.quality RUN --reference REF`: what a free-running run's early exits cost
in output, against the same model's full-depth greedy output on the same prompts.

Why these measures (issue 26): a confidence exit that predicts a different token changes
every later input, so per-token error rates of a teacher-forced run say little about the
text a user gets. Measured here, per request of the workload:
  - token agreement: the share of positions whose token equals the reference's (and the
    same by position, the `by_position` table: how agreement decays along the output);
  - prefix: tokens before the first divergence (the whole length when identical);
  - identical: the request's output equals the reference's token for token;
  - how the ORIGINAL SmolLM2-135M scores each output: mean log-likelihood per generated
    token, teacher-forced on prompt + generated tokens, for the run and for the reference,
    so that a divergence that is still fluent text can be told from one that is not.
Both runs are `traces.execute free_running=true` output folders (generated.parquet and the
config.yaml that rebuilds their workload); the prompts are the ids the executor fed, rebuilt
by `traces.serving.request_sequences` from the run's config (same trace, seed, workload).
Writes quality.json and quality.parquet (one row per request) into the run folder, and
caches each folder's scores in loglik.parquet, keyed by a hash of its tokens.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.errors import TraceError, UserError

GENERATED = "generated.parquet"
LOGLIK = "loglik.parquet"
COLUMNS = ("request_id", "position", "token")


def generated_path(run: str | Path) -> Path:
    """A run folder or its generated.parquet, as the file's path."""
    p = Path(run)
    return p / GENERATED if p.is_dir() else p


def read_generated(path: str | Path) -> dict[int, np.ndarray]:
    """{request_id: tokens in position order} of a generated.parquet; positions must be
    0..G-1 in every request (a file that is not is refused, naming the request)."""
    path = generated_path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such file (generated.parquet is written by traces.execute free_running=true)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(table.column_names)}")
    df = table.select(list(COLUMNS)).to_pandas().sort_values(["request_id", "position"], kind="stable")
    out = {}
    for rid, g in df.groupby("request_id", sort=True):
        pos = g.position.to_numpy()
        if not np.array_equal(pos, np.arange(pos.size)):
            raise TraceError(f"{path}: request {rid}: positions are not 0..{pos.size - 1} (duplicated or missing)")
        out[int(rid)] = g.token.to_numpy(np.int64)
    if not out:
        raise TraceError(f"{path}: no rows")
    return out


def tokens_digest(tokens: dict[int, np.ndarray]) -> str:
    """A stable hash of a run's output: same tokens, same digest (the score cache's key)."""
    h = hashlib.sha1()
    for rid in sorted(tokens):
        h.update(np.int64(rid).tobytes())
        h.update(np.ascontiguousarray(tokens[rid], dtype=np.int64).tobytes())
    return h.hexdigest()


@dataclass
class Agreement:
    summary: dict  # token_agreement, mean_prefix_tokens, identical_share, requests, tokens
    per_request: pd.DataFrame  # request_id, gen_len, matches, prefix_tokens, identical
    by_position: pd.DataFrame  # position, requests (reaching it), agreement


def agreement(run: dict[int, np.ndarray], reference: dict[int, np.ndarray]) -> Agreement:
    """Token agreement of `run` with `reference`, request by request. Both must hold the same
    requests with the same lengths: a free-running run generates as many tokens as the
    trace gives each request, so a length mismatch means different workloads."""
    if set(run) != set(reference):
        only = sorted(set(run) ^ set(reference))[:3]
        raise UserError(f"run and reference hold different requests (e.g. {only}): not the same workload")
    rows, width = [], max(t.size for t in reference.values())
    hits, reach = np.zeros(width), np.zeros(width)
    for rid in sorted(reference):
        a, b = run[rid], reference[rid]
        if a.size != b.size:
            raise UserError(f"request {rid}: the run generated {a.size} tokens, the reference {b.size}: "
                            f"not the same workload")
        same = a == b
        prefix = int(same.size if same.all() else np.argmin(same))
        rows.append((rid, int(same.size), int(same.sum()), prefix, bool(same.all())))
        hits[:same.size] += same
        reach[:same.size] += 1
    per = pd.DataFrame(rows, columns=["request_id", "gen_len", "matches", "prefix_tokens", "identical"])
    summary = {"token_agreement": float(per.matches.sum() / per.gen_len.sum()),
               "mean_prefix_tokens": float(per.prefix_tokens.mean()),
               "identical_share": float(per.identical.mean()),
               "requests": int(len(per)), "tokens": int(per.gen_len.sum())}
    by_pos = pd.DataFrame({"position": np.arange(width), "requests": reach.astype(np.int64),
                           "agreement": hits / np.maximum(reach, 1)})
    return Agreement(summary, per, by_pos)


# -- prompts: the ids the executor fed, from the run's own config ------------------------------------
def run_config(run: str | Path):
    """The typed RunConfig of a traces.execute output folder (its config.yaml)."""
    from omegaconf import OmegaConf

    from sim.config import load_config

    path = generated_path(run).parent / "config.yaml"
    if not path.is_file():
        raise UserError(f"{path}: no such file (the run's config rebuilds its workload and prompts)")
    return load_config(OmegaConf.load(path))


def workload_prompts(cfg, tokenizer) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(prompt ids, trace request index, tokens to generate) per workload request of a run
    config: the workload is rebuilt as the simulator builds it (the exits do not change which
    requests are drawn), the ids as the executor made them."""
    from sim.simulation import load_run_trace
    from sim.workload import build_workload

    from .serving.inputs import request_sequences

    trace = load_run_trace(cfg)
    wl = build_workload(trace, trace.exit_loop, np.zeros(trace.num_tokens, bool), trace.num_loops,
                        cfg.workload, cfg.seed)
    seqs = request_sequences(trace, wl, tokenizer, cfg.model.vocab, cfg.seed)
    return [s[:int(p)] for s, p in zip(seqs, wl.prompt_len)], wl.source, wl.gen_len


def same_workload(run_cfg, ref_cfg) -> None:
    """Refuse a reference whose workload (trace, requests drawn, seed) differs from the run's."""
    keys = [("trace.path", run_cfg.trace.path, ref_cfg.trace.path), ("seed", run_cfg.seed, ref_cfg.seed),
            ("workload.num_requests", run_cfg.workload.num_requests, ref_cfg.workload.num_requests)]
    bad = [f"{k}={a!r} vs {b!r}" for k, a, b in keys if a != b]
    if bad:
        raise UserError(f"the reference is not the run's workload: {'; '.join(bad)}")


# -- scoring by the original model ------------------------------------------------------------------
def loglik(model, prompts: list[np.ndarray], outputs: list[np.ndarray], batch: int = 8) -> np.ndarray:
    """Sum of log p(token) over each output's tokens under `model` (a transformers causal LM),
    teacher-forced on prompt + output; sequences right-padded in batches of similar length.
    Only the generated positions go through the LM head (49k columns: most of the memory)."""
    import torch

    seqs = [np.concatenate([p, o]).astype(np.int64) for p, o in zip(prompts, outputs)]
    order = np.argsort([s.size for s in seqs], kind="stable")
    out = np.zeros(len(seqs))
    base, head = model.get_decoder(), model.get_output_embeddings()
    with torch.inference_mode():
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            L = max(seqs[j].size for j in idx)
            ids = torch.zeros(len(idx), L, dtype=torch.long)
            mask = torch.zeros(len(idx), L, dtype=torch.long)
            for r, j in enumerate(idx):
                ids[r, :seqs[j].size] = torch.from_numpy(seqs[j])
                mask[r, :seqs[j].size] = 1
            hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
            for r, j in enumerate(idx):
                P, G = prompts[j].size, outputs[j].size
                if G == 0:
                    continue
                # position t predicts token t+1: the outputs' predictors are P-1 .. P+G-2
                logp = torch.log_softmax(head(hidden[r, P - 1:P + G - 1]).double(), -1)
                out[j] = float(logp.gather(1, ids[r, P:P + G, None]).sum())
    return out


def scored(run: str | Path, tokens: dict[int, np.ndarray], prompts: list[np.ndarray], model, source: str,
           batch: int = 8) -> pd.DataFrame:
    """Per request: loglik_sum and tokens, from the folder's loglik.parquet when it scored
    these very tokens with this scorer, else computed and cached there."""
    cache = generated_path(run).parent / LOGLIK
    key = f"{tokens_digest(tokens)}:{source}"
    if cache.is_file():
        t = pq.read_table(cache)
        if (t.schema.metadata or {}).get(b"key", b"").decode() == key:
            return t.to_pandas()
    rids = sorted(tokens)
    sums = loglik(model, [prompts[r] for r in rids], [tokens[r] for r in rids], batch)
    df = pd.DataFrame({"request_id": rids, "loglik_sum": sums, "tokens": [tokens[r].size for r in rids]})
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), b"key": key.encode()}), cache)
    return df


def loglik_summary(df: pd.DataFrame) -> float:
    """Mean log-likelihood per generated token (pooled over all tokens of the run)."""
    return float(df.loglik_sum.sum() / max(int(df.tokens.sum()), 1))


def measure(run: str | Path, reference: str | Path, scorer=None, source: str = "gguf",
            batch: int = 8) -> dict:
    """Every quality measure of `run` against `reference` (folders of traces.execute
    free_running=true); `scorer` = (original model, tokenizer) from traces.base_model.load_base,
    loaded here when None. Writes quality.json and quality.parquet into the run folder."""
    run_tok, ref_tok = read_generated(run), read_generated(reference)
    run_cfg, ref_cfg = run_config(run), run_config(reference)
    same_workload(run_cfg, ref_cfg)
    agree = agreement(run_tok, ref_tok)
    if scorer is None:
        from .base_model import load_base
        scorer = load_base(source)
    model, tok = scorer
    prompts, src, gen_len = workload_prompts(run_cfg, tok)
    short = [r for r in range(len(prompts)) if r not in run_tok or run_tok[r].size != gen_len[r]]
    if short or len(run_tok) != len(prompts):
        r = short[0] if short else max(run_tok)
        raise UserError(f"{generated_path(run)}: request {r} does not have the {gen_len[r] if r < len(gen_len) else 0} "
                        f"tokens the run's workload of {len(prompts)} requests gives it (an unfinished run?)")
    mine = scored(run, run_tok, prompts, model, source, batch)
    ref = scored(reference, ref_tok, prompts, model, source, batch)
    per = agree.per_request.assign(
        trace_request=src[agree.per_request.request_id.to_numpy()],
        orig_loglik=(mine.loglik_sum / mine.tokens).to_numpy(),
        ref_orig_loglik=(ref.loglik_sum / ref.tokens).to_numpy())
    summary = {**agree.summary, "orig_loglik": loglik_summary(mine), "ref_orig_loglik": loglik_summary(ref),
               "scorer": f"original SmolLM2-135M ({source})", "run": str(generated_path(run).parent),
               "reference": str(generated_path(reference).parent)}
    out = generated_path(run).parent
    per.to_parquet(out / "quality.parquet", index=False)
    agree.by_position.to_parquet(out / "quality_by_position.parquet", index=False)
    (out / "quality.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def parser():
    """The command line: plain options only (the traces commands' conventions: traces/cli.py)."""
    from .cli import OneLineParser

    ap = OneLineParser(prog="python -m traces.quality", description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a traces.execute free_running=true output folder (or its generated.parquet)")
    ap.add_argument("--reference", required=True,
                    help="the same workload's scheduler=continuous exit=none free_running=true folder")
    ap.add_argument("--source", default="gguf", help="original model (traces.base_model.load_base)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per scoring forward")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return ap


def main(argv: list[str] | None = None) -> int:
    from .cli import fail, torch_missing

    args = parser().parse_args(argv)
    if torch_missing("traces.quality"):
        return 2
    try:
        if args.batch < 1:
            raise UserError(f"--batch {args.batch} must be >= 1")
        for p in (args.run, args.reference):
            read_generated(p)  # a bad input fails before the model loads
            run_config(p)
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        s = measure(args.run, args.reference, source=args.source, batch=args.batch)
    except UserError as exc:
        return fail(exc)
    print(f"  token agreement      {s['token_agreement']:.1%} of {s['tokens']:,} tokens")
    print(f"  prefix before diverging  {s['mean_prefix_tokens']:.1f} tokens (mean over {s['requests']} requests)")
    print(f"  identical requests   {s['identical_share']:.1%}")
    print(f"  original model log-likelihood / token: run {s['orig_loglik']:.3f}, reference {s['ref_orig_loglik']:.3f}")
    print(f"  outputs              {generated_path(args.run).parent / 'quality.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
