"""How the dataset manifest scales with the number of shards (format 2: a small JSON header plus
Arrow tables), against the same content as format-1 inline JSON.

    python bench/bench_manifest.py [--shards 1000000] [--json]

Writes a synthetic dataset manifest of N shards (entries only; no shard files), then times, in
fresh child processes so that nothing is cached in Python: loading the header, loading the shard
table (with its sha256 check), and, for comparison, parsing the format-1 JSON of the same
entries. Prints the figures; targets: header < 0.1 s, shard table < 1 s at 1M shards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

from trimodal.dataset.manifest import SHARD_TABLE_SCHEMA, Manifest, ShardTable


def synthetic_table(n: int) -> pa.Table:
    idx = np.arange(n)
    names = pa.array([f"part-src-input{i // 4:07d}-{i % 4:04d}" for i in range(n)])
    sha = pa.array([hashlib.sha256(str(i).encode()).digest() for i in range(n)], pa.binary(32))
    return pa.table(
        {
            "path": pa.compute.binary_join_element_wise("shards/", names, ".arrow", ""),
            "rows": pa.array(np.full(n, 1000, np.int64)),
            "bytes": pa.array(4_000_000 + idx % 977, pa.int64()),
            "sha256": sha,
            "tokens_text": pa.array(np.full(n, 300_000, np.int64)),
            "tokens_image": pa.array(np.zeros(n, np.int64)),
            "tokens_audio": pa.array(np.zeros(n, np.int64)),
            "by_source": pa.array(['{"src":{"audio":0,"image":0,"rows":1000,"text":300000}}'] * n),
            "index_bytes": pa.array(np.full(n, 13_000, np.int64)),
            "index_sha256": sha,
        },
        schema=SHARD_TABLE_SCHEMA,
    )


CHILD = """
import sys, time, json
t0 = time.perf_counter()
from trimodal.dataset.manifest import Manifest
t_import = time.perf_counter() - t0
t0 = time.perf_counter(); m = Manifest.load(sys.argv[1]); t_header = time.perf_counter() - t0
t0 = time.perf_counter(); s = m.shards; n = len(s); rows = int(s.rows.sum()); t_table = time.perf_counter() - t0
t0 = time.perf_counter(); e = s[n // 2]; t_entry = time.perf_counter() - t0
print(json.dumps({"header_s": t_header, "shard_table_s": t_table, "one_entry_s": t_entry, "shards": n, "rows": rows}))
"""

CHILD_V1 = """
import sys, time, json
t0 = time.perf_counter(); d = json.loads(open(sys.argv[1]).read()); t = time.perf_counter() - t0
print(json.dumps({"parse_s": t, "shards": len(d["shards"])}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=1_000_000)
    ap.add_argument("--v1", action="store_true", help="also time the format-1 inline JSON (slow to build)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        table = synthetic_table(args.shards)
        m = Manifest(fingerprints={"text": {"kind": "sentencepiece"}}, shards=ShardTable(table))
        m.save(d)
        build_s = time.perf_counter() - t0
        sizes = {name: os.path.getsize(os.path.join(d, ref["path"])) for name, ref in m.tables.items()}
        sizes["manifest.json"] = os.path.getsize(os.path.join(d, "manifest.json"))
        out = json.loads(subprocess.check_output([sys.executable, "-c", CHILD, d], text=True))
        out.update({"write_s": round(build_s, 2), "bytes": sizes})
        if args.v1:
            p = os.path.join(d, "v1.json")
            with open(p, "w") as f:
                json.dump({"format_version": 1, "shards": list(ShardTable(table))}, f)
            out["v1"] = json.loads(subprocess.check_output([sys.executable, "-c", CHILD_V1, p], text=True))
            out["v1"]["bytes"] = os.path.getsize(p)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"shards                 {out['shards']:,} ({out['rows']:,} rows)")
    print(f"manifest.json          {out['bytes']['manifest.json']:,} bytes")
    print(f"shard table            {out['bytes']['shards']:,} bytes")
    print(f"load header            {out['header_s'] * 1e3:.1f} ms   (target < 100 ms)")
    print(f"load shard table       {out['shard_table_s'] * 1e3:.0f} ms   (target < 1000 ms, sha256 checked)")
    print(f"one entry as a dict    {out['one_entry_s'] * 1e3:.1f} ms (random access, no column converted)")
    if "v1" in out:
        print(f"format-1 JSON parse    {out['v1']['parse_s'] * 1e3:.0f} ms for {out['v1']['bytes']:,} bytes")


if __name__ == "__main__":
    main()
