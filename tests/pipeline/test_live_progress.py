"""Live progress on Ray: one input of thousands of samples shows samples, bytes read and the
codec pool's busy time while that input still runs (read from the progress stream as the job
writes it, no sleeps)."""

from __future__ import annotations

import io
import queue
import re
import tarfile
import threading

import pytest

from trimodal.pipeline.job import run_tokenize

pytestmark = pytest.mark.slow  # starts Ray (the tokenize job)

N = 3000


class _Lines(io.TextIOBase):
    """A text stream whose lines land in a queue the test waits on."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self.buf = ""

    def write(self, s: str) -> int:
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self.q.put(line)
        return len(s)


def _shard(path: str, n: int) -> None:
    from PIL import Image

    with tarfile.open(path, "w") as tf:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), (i % 251, (7 * i) % 253, 90)).save(buf, format="PNG")
            for name, data in ((f"s{i:05d}.png", buf.getvalue()), (f"s{i:05d}.txt", f"shape {i}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def test_progress_moves_inside_one_large_input(tmp_path, tokenizer_specs, ray_cluster):
    _shard(str(tmp_path / "big.tar"), N)
    cfg = {
        "sources": [{"name": "big", "kind": "image_text", "paths": [str(tmp_path / "big.tar")]}],
        "tokenizers": {
            m: {"kind": tokenizer_specs[m]["kind"], "path": str(tokenizer_specs[m]["path"])} for m in ("text", "image")
        },
        "output": {"uri": str(tmp_path / "ds"), "shard_rows": 512},
        "progress": {"interval_s": 0.3},
    }
    out = _Lines()
    result: dict = {}
    job = threading.Thread(target=lambda: result.update(run_tokenize(cfg, address=ray_cluster, stream=out)))
    job.start()
    seen = None
    lines = []
    while job.is_alive() or not out.q.empty():
        try:
            line = out.q.get(timeout=1.0)
        except queue.Empty:
            continue
        lines.append(line)
        # busy as a number, not "?": the pools answer their stats while encodes queue and run (a
        # figure of 0% is honest for a tiny codec over a short interval, so it is not required > 0)
        m = re.search(r"inputs (\d+)/1 .*samples (\d+) .*read (\S+ \S+) of .*busy (\d+)%", line)
        if m and m.group(1) == "0" and int(m.group(2)) > 0:
            seen = line
            break
    job.join()
    assert seen is not None, f"no progress line with samples and a codec busy figure before the input finished: {lines}"
    samples = int(re.search(r"samples (\d+) ", seen).group(1))
    assert 0 < samples < N, seen
    assert "ETA " in seen and "ETA ?" not in seen, seen  # from bytes read against the listed size
    assert result["samples"] == N
