"""The dataset layer: the on-disk contract every other part reads or writes, and the domain's names.

Owns: `schema` (modalities, source kinds, tokenizer kinds, the Arrow list column of codes),
`digest` (sha256 of files and of canonical JSON), `storage` (local paths and ``s3://`` behind one `Location`, atomic writes),
`shards` (Arrow IPC shard files and their length indexes), `manifest` (the atomic entry point
and its tables), `quarantine` (rejected samples with their reason), `dataset` (opening and
verifying a dataset, `build_dataset` for small writers) and `migrate` (format 1 → 2). It is the bottom data layer so that the mixer and the model read datasets without
importing the pipeline that writes them.

May import: `trimodal.config`, `trimodal.cluster`, `trimodal.errors` (enforced by `lint-imports`,
see docs/design.md, "Layout and layers").
"""
