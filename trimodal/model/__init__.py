"""The masked diffusion model and its trainer.

config (typed configs, presets) · transformer + attention (bidirectional, document-masked) ·
head_loss (the output head fused with a chunked, weighted cross-entropy) · schedules + diffusion
(noise schedules, the ELBO loss) · batch_size + optim (κ rule, AdamW, warmup + cosine) · data
(the worker's stream, prefetching, planned padding) · seeding (seeds from names) · trainer (the
per-worker loop in steps, Ray Train entry point) · checkpoint (sharded DCP, local / S3) · sampler
(iterative unmasking, batched guidance) · evaluate (the one held-out NELBO estimator, unigram
baseline) + eval_data (finite eval passes, sharded) + eval_shard (`trimodal eval`'s worker) +
eval_train (evaluation during training).

May import: `trimodal.mixer` (the worker's stream), `trimodal.pipeline` (allowed by the layers,
unused today), `trimodal.tokenizers`, `trimodal.dataset`, `trimodal.config`, `trimodal.cluster`,
`trimodal.errors`; never `trimodal.jobs` (enforced by `lint-imports`, see docs/design.md,
"Layout and layers").
"""
