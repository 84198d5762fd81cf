"""The dataset manifest: the only entry point a reader trusts.

Written last and atomically (a rename locally, one PUT on S3), so a reader either sees no
dataset or a complete one. It records the tokenizer fingerprint per modality (what the codes
mean), every shard with rows, tokens, bytes and sha256 (what the bytes must be), the inputs
consumed, quarantine counts by reason, and job statistics. Totals are derived from the shard
entries when saving, so they cannot drift from them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from trimodal.dataset.shards import MODALITY_COLUMNS
from trimodal.dataset.storage import resolve
from trimodal.errors import IntegrityError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass
class Manifest:
    fingerprints: dict[str, dict] = field(default_factory=dict)
    shards: list[dict] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)
    quarantine: dict[str, int] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    job: dict = field(default_factory=dict)
    totals: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    created: str = ""

    def compute_totals(self) -> dict:
        tokens = {m: sum(s["tokens"].get(m, 0) for s in self.shards) for m in MODALITY_COLUMNS}
        by_source: dict[str, dict] = {}
        for s in self.shards:
            for name, st in s.get("by_source", {}).items():
                acc = by_source.setdefault(name, {"rows": 0, **{m: 0 for m in MODALITY_COLUMNS}})
                for k, v in st.items():
                    acc[k] = acc.get(k, 0) + v
        return {
            "rows": sum(s["rows"] for s in self.shards),
            "tokens": tokens,
            "bytes": sum(s["bytes"] for s in self.shards),
            "shards": len(self.shards),
            "by_source": by_source,
            "quarantined": sum(self.quarantine.values()),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, dataset_uri: str) -> None:
        """Commit the dataset: totals are recomputed and the manifest written atomically."""
        self.totals = self.compute_totals()
        self.created = self.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        blob = json.dumps(self.to_dict(), indent=1, sort_keys=True).encode()
        resolve(dataset_uri).join(MANIFEST_NAME).write_bytes_atomic(blob)

    @classmethod
    def load(cls, dataset_uri: str) -> Manifest:
        loc = resolve(dataset_uri).join(MANIFEST_NAME)
        if not loc.exists():
            raise IntegrityError(
                f"{dataset_uri} is not a trimodal dataset (no {MANIFEST_NAME}; an unfinished job never writes one)"
            )
        try:
            d = json.loads(loc.read_bytes())
        except json.JSONDecodeError as e:
            raise IntegrityError(f"{loc.uri}: manifest is not valid JSON: {e}") from e
        if d.get("format_version") != FORMAT_VERSION:
            raise IntegrityError(
                f"{loc.uri}: format_version {d.get('format_version')!r}, this trimodal reads {FORMAT_VERSION}"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
