"""The tokenize pipeline: raw corpora → a tokenized dataset, on Ray (one task per input).

Owns: `readers` (JSONL, Parquet, text and WebDataset inputs, local or ``s3://``), `sources` and
`job_config` (what a job reads and how), `worker` (one Ray task per input: read, decode,
tokenize, write), `encode` (decoding and validation), `codec_pool` (codec actors), `writer` (one
input's rows → its shards), `runner` (the skeleton both jobs share: plan, markers, execute,
commit), `resume` (input keys, job fingerprint, markers), `progress`, and the two jobs `job` (`run_tokenize`) and `retokenize` (`run_retokenize`).
Datasets are written through `trimodal.dataset`, so the on-disk format is defined once.

May import: `trimodal.tokenizers`, `trimodal.dataset`, `trimodal.config`, `trimodal.cluster`,
`trimodal.errors`. Never `trimodal.mixer` (its independent sibling) nor anything above (enforced
by `lint-imports`, see docs/design.md, "Layout and layers").
"""
