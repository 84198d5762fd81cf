"""Resume and idempotence: stable input keys, a job fingerprint, per-input completion markers.

Each input file maps to a key (`<source>-<its path in the source>-<hash of its URI>`) and its
shards are named from that key, so a rerun rewrites exactly the same objects. After an input's shards and
quarantine file are written, the driver writes `_progress/<key>.json` (datatrove style) holding
that input's shard entries, quarantine counts and stats; the manifest is assembled from the
markers and committed last. A rerun skips inputs with a marker and redoes the others,
overwriting any partial shards they left.

Markers are only valid for the job that wrote them: `_progress/job.json` holds a fingerprint of
everything that changes the codes or the choice of rows (tokenizer fingerprints, limits, source
settings). A rerun with a different fingerprint is refused with the differing parts named,
unless the output mode is `restart`, which discards the old progress and manifest first.
Trade-off: markers are one small object per input (cheap to list and read, no coordinator),
at the cost of one extra PUT per input.
"""

from __future__ import annotations

import hashlib
import json
import re

import pyarrow.fs as pafs

from trimodal.dataset.manifest import MANIFEST_NAME
from trimodal.dataset.storage import resolve
from trimodal.errors import ConfigError

PROGRESS_DIR = "_progress"
JOB_FILE = "job.json"


def input_key(source: str, uri: str, name: str | None = None) -> str:
    """Stable, filesystem-safe key of one input file: ``<source>-<name>-<hash of the URI>``.

    `name` is the input's readable name within its source (`readers.common.input_name`: its
    path below the source's directory or glob); the hash keeps keys distinct whatever the sanitizing merged. The key
    does not depend on the position in the input list, so adding files to a source later
    leaves the keys (and markers, and shard names) of the existing ones unchanged."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", source)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or uri.rstrip("/").rsplit("/", 1)[-1]).strip("_.")[-80:]
    return f"{safe}-{stem}-{hashlib.sha1(uri.encode()).hexdigest()[:10]}"


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and len(out) < 8:
            out.extend(_diff(a, b, f"{prefix}{k}."))
        else:
            out.append(f"{prefix}{k}")
    return out


class MarkerStore:
    """The `_progress/` folder of one output dataset."""

    def __init__(self, dataset_uri: str):
        self.dataset_uri = dataset_uri
        self.root = resolve(dataset_uri).join(PROGRESS_DIR)

    def begin(self, fingerprint: str, parts: dict, mode: str) -> None:
        """Claim the output for this job; refuse (mode resume) or discard (mode restart) the
        progress of a different job."""
        loc = self.root.join(JOB_FILE)
        if loc.exists():
            old = json.loads(loc.read_bytes())
            if old.get("fingerprint") != fingerprint:
                if mode != "restart":
                    what = ", ".join(_diff(old.get("parts", {}), parts)[:8]) or "unknown"
                    raise ConfigError(
                        f"output.uri: {self.dataset_uri} holds progress of a different job "
                        f"(fingerprint {old.get('fingerprint')} vs {fingerprint}; differs in: {what}). "
                        "Its markers cannot be reused because the codes would differ: use a new "
                        "output.uri, or output.mode=restart (--restart) to discard that progress."
                    )
                self.clear()
            elif mode == "restart":
                self.clear()
        elif mode == "restart":
            self.clear()
        loc.write_bytes_atomic(
            json.dumps({"fingerprint": fingerprint, "parts": parts}, indent=1, sort_keys=True, default=str).encode()
        )

    def clear(self) -> None:
        """Uncommit the dataset and forget all progress: the manifest first (so no reader ever
        sees a manifest pointing at deleted shards), then markers, shards and quarantine."""
        base = resolve(self.dataset_uri)
        manifest = base.join(MANIFEST_NAME)
        if manifest.exists():
            manifest.fs.delete_file(manifest.path)
        for sub in (PROGRESS_DIR, "shards", "quarantine"):
            loc = base.join(sub)
            if loc.fs.get_file_info(loc.path).type == pafs.FileType.Directory:
                loc.fs.delete_dir_contents(loc.path, missing_dir_ok=True)

    def load_all(self, fingerprint: str) -> dict[str, dict]:
        """Completed inputs of this job: key -> marker (markers of other jobs are ignored)."""
        sel = pafs.FileSelector(self.root.path, recursive=False, allow_not_found=True)
        out = {}
        for info in self.root.fs.get_file_info(sel):
            name = info.path.rsplit("/", 1)[-1]
            if info.type != pafs.FileType.File or not name.endswith(".json") or name == JOB_FILE:
                continue
            try:
                m = json.loads(self.root.join(name).read_bytes())
            except (ValueError, OSError):
                continue  # a torn marker (impossible with atomic writes, but cheap to survive)
            if m.get("job") == fingerprint and m.get("status") == "done":
                out[m["key"]] = m
        return out

    def write(self, key: str, marker: dict) -> None:
        self.root.join(f"{key}.json").write_bytes_atomic(json.dumps(marker, sort_keys=True, default=str).encode())
