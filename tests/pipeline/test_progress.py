"""Progress lines and the final summary (no Ray): what they count and what they show."""

from __future__ import annotations

import io

from trimodal.pipeline.progress import Progress, format_summary


def test_samples_are_the_kept_records_not_all_records():
    # 37 records of which 17 quarantined: 20 samples reach the shards, and the line says so
    # (it used to say "samples 37").
    out = io.StringIO()
    p = Progress(3, skipped_inputs=1, interval_s=3600, stream=out)
    p.add_records(30, 12, {"text": 400})
    p.add_records(7, 5, {"text": 20})
    p.input_done()
    p.maybe_print(force=True)
    line = out.getvalue().strip()
    assert (p.records, p.samples, p.rejected) == (37, 20, 17)
    assert "samples 20 (" in line and "quarantined 17 of 37 records" in line, line
    assert "inputs 2/3 (resumed 1)" in line and "text=420" in line


def test_summary_names_every_failed_input():
    s = {
        "output": "/data/ds",
        "wall_seconds": 1.0,
        "inputs": 2,
        "inputs_resumed": 0,
        "samples": 5,
        "shards": 1,
        "bytes": 100,
        "tokens": {"text": 10},
        "quarantined": {},
        "failed_inputs": [{"uri": "/c/bad.jsonl.gz", "key": "k", "error": "damaged gzip data"}],
    }
    assert "FAILED INPUT /c/bad.jsonl.gz: damaged gzip data" in format_summary(s)
