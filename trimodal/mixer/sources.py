"""Opening a mix's datasets and deriving the one vocabulary they must share.

Shards hold codec codes, so two datasets can only be mixed if their tokenizers agree: the same
kind, codebook size, number of levels and weights for every modality both use. Without a
`vocab` in the mix, the vocabulary is derived from the sources' fingerprints and any pair of
sources that disagree is refused, naming both sources and the differing fields; with one, every
source is checked against it (what a resumed run or a checkpoint's vocab.json requires).
"""

from __future__ import annotations

from trimodal.dataset.dataset import Dataset
from trimodal.dataset.shards import MODALITY_COLUMNS
from trimodal.errors import ConfigError, IntegrityError
from trimodal.mixer.config import MixConfig
from trimodal.tokenizers.vocab import IDENTITY_FIELDS, Vocabulary


def _totals(ds: Dataset) -> dict:
    """The dataset's totals from its manifest header (what format 2 writes); computed from the
    shard table when a header lacks them (old format-1 manifests)."""
    totals = ds.manifest.totals
    if not totals or "tokens" not in totals or "by_source" not in totals:
        totals = ds.manifest.totals = ds.manifest.compute_totals()
    return totals


def open_datasets(cfg: MixConfig) -> dict[str, Dataset]:
    """Each source's dataset, by source name (manifest headers only: shard tables, indexes and
    shards are read lazily). Sources naming the same dataset share one `Dataset`."""
    out: dict[str, Dataset] = {}
    by_uri: dict[str, Dataset] = {}
    for s in cfg.sources:
        ds = by_uri.get(s.dataset)
        if ds is None:
            ds = by_uri[s.dataset] = Dataset.open(s.dataset, verify=cfg.verify)
        totals = _totals(ds)
        if s.dataset_sources:
            known = totals["by_source"]
            missing = [n for n in s.dataset_sources if n not in known]
            if missing:
                raise ConfigError(
                    f"sources.{s.name}.dataset_sources: {missing} not in dataset {s.dataset}; it holds {sorted(known)}"
                )
        missing = [m for m in MODALITY_COLUMNS if totals["tokens"].get(m, 0) > 0 and m not in ds.fingerprints]
        if missing:
            raise IntegrityError(
                f"source {s.name!r}: dataset {s.dataset} has {', '.join(missing)} codes "
                "but no tokenizer fingerprint for them in its manifest"
            )
        out[s.name] = ds
    return out


def source_tokens(ds: Dataset, names: list[str] | None) -> dict[str, int]:
    """Tokens per modality of a dataset, or of the listed corpora (its `source` column) in it."""
    totals = _totals(ds)
    if not names:
        return totals["tokens"]
    return {m: sum(totals["by_source"].get(n, {}).get(m, 0) for n in names) for m in MODALITY_COLUMNS}


def source_counts(ds: Dataset, names: list[str] | None) -> dict:
    """Samples and the shards holding them, of a dataset or of the listed corpora in it (what a
    mix source with `dataset_sources` actually draws from)."""
    if not names:
        return {"samples": ds.num_rows, "shards": len(ds.shards)}
    rows = [sum(sh.get("by_source", {}).get(n, {}).get("rows", 0) for n in names) for sh in ds.shards]
    return {"samples": sum(rows), "shards": sum(1 for r in rows if r)}


def _differences(a: dict, b: dict) -> list[str]:
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in IDENTITY_FIELDS if a.get(k) != b.get(k)]


def build_vocabulary(datasets: dict[str, Dataset], vocab_uri: str | None = None) -> Vocabulary:
    """The mix's vocabulary; IntegrityError if the sources' tokenizers disagree with it or each other."""
    if vocab_uri:
        vocab = Vocabulary.load(vocab_uri)
        for name, ds in datasets.items():
            for modality, fp in ds.fingerprints.items():
                if fp is not None and modality in MODALITY_COLUMNS:
                    vocab.check(modality, fp, what=f"source {name!r} ({ds.uri})")
        return vocab
    chosen: dict[str, tuple[str, Dataset, dict]] = {}
    for name, ds in datasets.items():
        for modality in MODALITY_COLUMNS:
            fp = ds.fingerprints.get(modality)
            if fp is None:
                continue
            if modality not in chosen:
                chosen[modality] = (name, ds, fp)
                continue
            first, first_ds, first_fp = chosen[modality]
            diff = _differences(first_fp, fp)
            if diff:
                raise IntegrityError(
                    f"sources {first!r} ({first_ds.uri}) and {name!r} ({ds.uri}) use different {modality} "
                    f"tokenizers ({first_fp.get('name')!r} vs {fp.get('name')!r}; {'; '.join(diff)}): one mix "
                    "needs one vocabulary, retokenize one of them"
                )
    return Vocabulary.from_fingerprints({m: fp for m, (_, _, fp) in chosen.items()})
