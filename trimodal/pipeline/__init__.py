"""The tokenize pipeline: raw corpora → a tokenized dataset, on Ray Data.

Owns: `readers` (JSONL, Parquet, text and WebDataset inputs, local or ``s3://``), `sources` and
`job_config` (what a job reads and how), `encode` and `graph` (decoding and tokenizer stages in
Ray Data), `assemble` (one input's records → its shards, quarantine file and completion marker),
`resume` (input keys, job fingerprint, markers), `progress`, and the two jobs `job`
(`run_tokenize`) and `retokenize` (`run_retokenize`). Datasets are written through
`trimodal.dataset`, so the on-disk format is defined once.

May import: `trimodal.tokenizers`, `trimodal.dataset`, `trimodal.config`, `trimodal.cluster`,
`trimodal.errors`. Never `trimodal.mixer` (its independent sibling) nor anything above (enforced
by `lint-imports`, see docs/design.md, "Layers").
"""
