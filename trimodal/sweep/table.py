"""The results table, `results.parquet` in the sweep dir: one row per (trial, evaluated step,
split, group), tidy, so that a fit selects with a filter and never parses names.

`RESULTS_SCHEMA` is the contract the fits read (trimodal sweep fit/report); after its columns
come one ``share.<source>`` float64 column per source of the base mix (`results_schema`): the
point's normalized base shares. Groups: ("all", "all") the joint NELBO of every maskable token;
("modality", text|image|audio) the joint NELBO split by the token's modality; ("task",
text|t2i|t2s|i2t|s2t) the target given a clean condition (docs/training.md, "Evaluation"). `nelbo`
is in nats per token, `bits` = nelbo / ln 2, `se` the standard error over the eval's seeds,
`unigram` the "learned nothing" line of the same tokens. `tokens`, `flops`, ... are the compute
at that step (real tokens trained on, C), so held-out loss plots against compute directly.

Rows come from the run's own records (model/metrics.py): every ``{"event": "eval"}`` record of
metrics.jsonl (a step logged twice, replayed after a resume, keeps its last record) and the
summary's last evaluation, which an s3:// run's uploaded metrics.jsonl may miss.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa

RESULTS_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial", pa.string()),
        ("step", pa.int64()),
        ("final", pa.bool_()),
        ("split", pa.string()),
        ("group_kind", pa.string()),
        ("group", pa.string()),
        ("nelbo", pa.float64()),
        pa.field("se", pa.float64(), nullable=True),
        pa.field("bits", pa.float64(), nullable=True),
        pa.field("unigram", pa.float64(), nullable=True),
        ("params", pa.int64()),
        ("params_non_embedding", pa.int64()),
        ("tokens", pa.int64()),
        ("tokens_padded", pa.int64()),
        ("flops", pa.float64()),
        ("flops_non_embedding", pa.float64()),
        ("preset", pa.string()),
        ("dim", pa.int64()),
        ("n_layers", pa.int64()),
        ("schedule", pa.string()),
        ("logical_batch", pa.int64()),
        ("seq_len", pa.int64()),
        ("lr_base", pa.float64()),
        ("seed", pa.int64()),
        ("steps", pa.int64()),
        pa.field("budget_flops", pa.float64(), nullable=True),
        ("parameterization", pa.string()),
        ("point", pa.string()),
    ]
)
SHARE_PREFIX = "share."
GROUP_KINDS = ("all", "modality", "task")
MODALITIES = ("text", "image", "audio")
TASKS = ("text", "t2i", "t2s", "i2t", "s2t")
# the compute fields of every record (model/metrics.py, Compute.fields)
_COMPUTE = ("params", "params_non_embedding", "tokens_real", "tokens_padded", "flops", "flops_non_embedding")


def results_schema(sources: list[str]) -> pa.Schema:
    """RESULTS_SCHEMA plus one `share.<source>` column per source, in the base mix's order."""
    return pa.schema(list(RESULTS_SCHEMA) + [pa.field(SHARE_PREFIX + s, pa.float64()) for s in sources])


def _groups(rec: dict) -> list[tuple[str, str, dict]]:
    """(group_kind, group, {nelbo, se, bits, unigram}) of one flat eval record (evaluate.flatten)."""
    out = []

    def fig(nelbo_key, se_key, bits_key, uni_key):
        if nelbo_key not in rec:
            return None
        nelbo = float(rec[nelbo_key])
        bits = rec.get(bits_key) if bits_key else None
        return {
            "nelbo": nelbo,
            "se": rec.get(se_key),
            "bits": float(bits) if bits is not None else nelbo / math.log(2),
            "unigram": rec.get(uni_key),
        }

    f = fig("eval.nelbo", "eval.se", "eval.bits", "eval.unigram")
    if f:
        out.append(("all", "all", f))
    for m in MODALITIES:
        f = fig(f"eval.nelbo.{m}", f"eval.se.{m}", f"eval.bits.{m}", f"eval.unigram.{m}")
        if f:
            out.append(("modality", m, f))
    for t in TASKS:
        f = fig(f"eval.task.{t}.nelbo", f"eval.task.{t}.se", None, f"eval.task.{t}.unigram")
        if f:
            out.append(("task", t, f))
    return out


def eval_records(metrics: list[dict], summary: dict | None) -> dict[int, dict]:
    """step -> the flat eval record with its compute fields: metrics.jsonl's eval records (the
    last of a step wins) and the summary's final evaluation if the log lacks it."""
    out: dict[int, dict] = {}
    for r in metrics:
        if r.get("event") == "eval" and "step" in r:
            out[int(r["step"])] = r
    if summary and summary.get("eval") and int(summary["eval"]["step"]) not in out:
        from trimodal.model.evaluate import flatten

        ev = summary["eval"]
        out[int(ev["step"])] = {"step": ev["step"], **flatten(ev), **{k: summary[k] for k in _COMPUTE}}
    return out


def trial_rows(
    sweep: str, point: dict, train: dict, split: str, records: dict[int, dict], final_step: int
) -> list[dict]:
    """The table rows of one trial: per evaluated step, per group. `point` is Point.to_json()."""
    from trimodal.config import from_dict
    from trimodal.model.config import ModelConfig

    model = from_dict(ModelConfig, train["model"], where="model").resolve()
    seq_len = train["mix"]["seq_len"]
    fixed = {
        "sweep": sweep,
        "trial": point["name"],
        "split": split,
        "preset": model.preset,
        "dim": model.dim,
        "n_layers": model.n_layers,
        "schedule": train["diffusion"]["schedule"]["name"],
        "logical_batch": train["logical_batch"],
        "seq_len": seq_len,
        "lr_base": float(train["hyper"]["lr_base"]),
        "seed": train["seed"],
        "steps": train["steps"],
        "budget_flops": point.get("budget_flops"),
        "parameterization": model.parameterization,
        "point": json.dumps(point["settings"], sort_keys=True, default=str),
        **{SHARE_PREFIX + s: v for s, v in point["shares"].items()},
    }
    rows = []
    for step in sorted(records):
        rec = records[step]
        for kind, group, f in _groups(rec):
            rows.append(
                {
                    **fixed,
                    "step": step,
                    "final": step == final_step,
                    "group_kind": kind,
                    "group": group,
                    **f,
                    "params": int(rec["params"]),
                    "params_non_embedding": int(rec["params_non_embedding"]),
                    "tokens": int(round(rec["tokens_real"])),
                    "tokens_padded": int(round(rec["tokens_padded"])),
                    "flops": float(rec["flops"]),
                    "flops_non_embedding": float(rec["flops_non_embedding"]),
                }
            )
    return rows


def to_table(rows: list[dict], sources: list[str]) -> pa.Table:
    schema = results_schema(sources)
    rows = sorted(
        rows, key=lambda r: (r["trial"], r["step"], r["split"], GROUP_KINDS.index(r["group_kind"]), r["group"])
    )
    return pa.Table.from_pylist(rows, schema=schema)


def write_table(table: pa.Table, uri: str) -> None:
    """Parquet at `uri` (local or s3://), written whole then moved into place."""
    import pyarrow.parquet as pq

    from trimodal.dataset.storage import resolve

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    resolve(uri).write_bytes_atomic(sink.getvalue().to_pybytes())


def read_table(uri: str) -> pa.Table:
    import io

    import pyarrow.parquet as pq

    from trimodal.dataset.storage import resolve

    return pq.read_table(io.BytesIO(resolve(uri).read_bytes()))
