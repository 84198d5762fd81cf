"""`trimodal eval RUN_OR_CHECKPOINT [--mix EVAL.yaml] [--split train|eval] [--tokens N]
[--n-t K] [--seeds S] [--json]`: the held-out NELBO of a checkpoint.

The estimator (trimodal/model/evaluate.py) is the same for every run, whatever schedule it
trained with: per modality the NELBO per token in nats, bits per token and the perplexity
bound exp(NELBO), each with its standard error over `--seeds` replicates; per task the NELBO
of the target given its condition; beside each, the unigram entropy of the same tokens.

The rows: `--mix EVAL.yaml`, a mix of its own read once (every source one epoch); without it,
the run's own mix: `--split eval` (default) its held-out samples — which needs a mix with a
`holdout` (refused with exit 2 otherwise) — or `--split train` one pass over its training
samples. `--tokens N` keeps the first ⌈N / seq_len⌉ rows. A run directory means its
newest checkpoint.

On Ray, `--workers` tasks (fractional CPUs) each take every W-th batch of the one global eval
stream, load the checkpoint and return float64 partial sums, added up here; the draws are
keyed by global row, so any number of workers gives the same figures up to float summation
order. `--in-process`: one worker here, without Ray.

Exit codes: 2 bad option or config (`--split eval` without a holdout), 3 the data's vocabulary
differs from the checkpoint's, 4 a checkpoint or dataset that cannot be read.
"""

from __future__ import annotations

import json
import time

import click

from trimodal.errors import ConfigError


def run_eval(
    target: str,
    mix=None,
    split: str | None = None,
    tokens: int | None = None,
    n_t: int = 8,
    seeds: int = 4,
    seed: int = 0,
    batch: int = 8,
    workers: int = 1,
    cpus_per_worker: float = 0.5,
    in_process: bool = False,
    address: str | None = None,
    device: str = "cpu",
) -> dict:
    """The figures of a checkpoint (or a run's newest) as a dict (the `--json` schema)."""
    from trimodal.config import from_dict
    from trimodal.jobs.train import _absolute_mix
    from trimodal.model.checkpoint import read_json, resolve_checkpoint
    from trimodal.model.config import TrainConfig, eval_mix_config
    from trimodal.model.eval_data import SPLITS, rows_for_tokens
    from trimodal.model.evaluate import summarize

    for name, v in (("--n-t", n_t), ("--seeds", seeds), ("--batch", batch), ("--workers", workers)):
        if v < 1:
            raise ConfigError(f"{name}: must be >= 1, got {v}")
    if tokens is not None and tokens < 1:
        raise ConfigError(f"--tokens: must be >= 1, got {tokens}")
    ckpt = resolve_checkpoint(target)
    if mix is not None:
        # dataset paths absolute: Ray tasks run in other working directories
        source, split = _absolute_mix(eval_mix_config(mix, "--mix")), split or "train"
    else:
        cfg = from_dict(TrainConfig, read_json(ckpt, "config.json"), where=f"{ckpt}/config.json")
        source, split = cfg.mix, split or "eval"
    if split not in SPLITS:
        raise ConfigError(f"--split: {split!r} is not one of {list(SPLITS)}")
    max_rows = rows_for_tokens(tokens, source.seq_len)
    args = (ckpt, source, split)
    rest = (batch, max_rows, n_t, seeds, seed, device)
    t0 = time.perf_counter()
    from trimodal.model.eval_shard import evaluate_shard

    if in_process:
        parts = [evaluate_shard(*args, w, workers, *rest) for w in range(workers)]
    else:
        import ray

        from trimodal.cluster import ensure_ray

        ensure_ray(address)
        task = ray.remote(num_cpus=cpus_per_worker)(evaluate_shard)
        threads = max(1, int(cpus_per_worker))
        parts = ray.get([task.remote(*args, w, workers, *rest, threads) for w in range(workers)])
    acc = parts[0]
    for p in parts[1:]:
        acc = acc + p
    dt = time.perf_counter() - t0
    state = read_json(ckpt, "state.json")
    res = summarize(acc)
    n = res["all"]["tokens"] if "all" in res else 0
    return {
        "checkpoint": ckpt,
        "step": state.get("step"),
        "split": split,
        "mix": mix if isinstance(mix, str) else ("inline" if mix is not None else "run"),
        "workers": workers,
        **res,
        "forward_tokens": acc.forward_tokens,
        "time_s": dt,
        "tokens_per_s": n / dt if dt > 0 else None,
    }


def format_table(res: dict) -> str:
    head = (
        f"{res['checkpoint']} (step {res['step']}), split {res['split']}: {res['rows']} rows, "
        f"K = {res['n_t']} masking rates × S = {res['seeds']} seeds"
    )
    lines = [
        head,
        f"{'':18}{'tokens':>9}  {'NELBO/tok':>10} {'± SE':>8}  {'bits/tok':>8}  {'ppl ≤':>10}  {'unigram':>8}",
    ]

    def row(label, f):
        se = f"{f['se']:.4f}" if f["se"] is not None else "-"
        uni = f"{f['unigram']:.4f}" if f["unigram"] is not None else "-"
        lines.append(
            f"{label:18}{f['tokens']:>9}  {f['nelbo']:>10.4f} {se:>8}  {f['bits']:>8.4f}  {f['ppl']:>10.2f}  {uni:>8}"
        )

    for m, f in res["modality"].items():
        row(f"modality {m}", f)
    if "all" in res:
        row("all (joint)", res["all"])
    for t, f in res["task"].items():
        row(f"task {t}", f)
    lines.append("NELBO in nats per token (an upper bound on the NLL); unigram: entropy of the same tokens")
    return "\n".join(lines)


@click.command("eval")
@click.argument("target", metavar="RUN_OR_CHECKPOINT")
@click.option("--mix", default=None, type=click.Path(dir_okay=False), help="An eval mix YAML, read once.")
@click.option(
    "--split",
    type=click.Choice(["eval", "train"]),
    default=None,
    help="eval: the held-out samples (the mix's holdout); train: one pass over the samples. "
    "Default: eval for the run's mix, train for --mix.",
)
@click.option("--tokens", type=int, default=None, help="Evaluate the first ⌈N / seq_len⌉ rows only.")
@click.option("--n-t", "n_t", default=8, show_default=True, help="Masking rates per row, t_k = (u + k/K) mod 1.")
@click.option("--seeds", default=4, show_default=True, help="Independent replicates (the standard error).")
@click.option("--seed", default=0, show_default=True)
@click.option("--batch", default=8, show_default=True, help="Rows per forward.")
@click.option("--workers", default=1, show_default=True, help="Ray tasks, each every W-th batch.")
@click.option("--cpus-per-worker", default=0.5, show_default=True, type=float)
@click.option("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray).")
@click.option("--in-process", is_flag=True, help="In this process, without Ray.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def eval_cmd(
    target, mix, split, tokens, n_t, seeds, seed, batch, workers, cpus_per_worker, address, in_process, device, as_json
):
    """Held-out NELBO of RUN_OR_CHECKPOINT per modality and per task, with the unigram line.

    Exit codes: 2 bad option or config (e.g. --split eval on a mix without holdout),
    3 the data's vocabulary differs from the checkpoint's, 4 unreadable checkpoint or data."""
    res = run_eval(
        target,
        mix=mix,
        split=split,
        tokens=tokens,
        n_t=n_t,
        seeds=seeds,
        seed=seed,
        batch=batch,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        in_process=in_process,
        address=address,
        device=device,
    )
    click.echo(json.dumps(res, default=str) if as_json else format_table(res))
