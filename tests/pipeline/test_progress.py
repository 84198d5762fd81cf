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


def test_live_counts_move_the_line_and_the_eta_comes_from_bytes():
    out = io.StringIO()
    p = Progress(2, interval_s=3600, stream=out, bytes_total=1000, bar=False)
    p.set_live(
        {
            "a": {
                "read": 300,
                "records": 256,
                "kept": 250,
                "quarantined": 6,
                "bytes_read": 300,
                "tokens": {"image": 16000},
            }
        }
    )
    p.maybe_print(force=True)
    line = out.getvalue().strip()
    assert "inputs 0/2 (resumed 0, 1 running)" in line and "samples 250 (" in line, line
    assert "quarantined 6 of 256 records" in line and "image=16000" in line and "read 256 B of 1000 B" in line, line
    assert "ETA ?" not in line  # 250 of 1000 bytes: three times the elapsed time to go
    # 300 bytes read for 300 records, of which 256 finished: 256 bytes count as consumed
    assert p.totals()["bytes"] == 256
    p.add_records(300, 6, {"image": 19000})
    p.input_done(size=1000, key="a")  # its marker's counts replace its live ones
    assert p.totals()["samples"] == 294
    assert p.totals()["bytes"] == 1000 and p.eta(1000) == "0s" and p.live == {}


def test_a_terminal_gets_a_bar_over_the_input_bytes():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert Progress(1, stream=io.StringIO()).bar is None  # a log file or pipe gets lines
    assert Progress(1, stream=Tty()).bar is None  # a "terminal" without a size, too
    out = Tty()
    p = Progress(1, interval_s=0.0, stream=out, bytes_total=2048, bar=True)
    p.set_live({"a": {"kept": 7, "read": 8, "records": 8, "bytes_read": 1024}})
    p.maybe_print(force=True)
    assert p.bar is not None and p.bar.n == 1024
    p.close()
    assert "samples 7" in out.getvalue() and "50%" in out.getvalue()
