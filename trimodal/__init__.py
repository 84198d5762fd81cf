"""trimodal: data pipeline, mixer and trainer for tri-modal masked diffusion models.

Layers, top to bottom (docs/design.md, "Layout and layers"; `lint-imports` enforces them):
`jobs` and `cli` (the commands) → `model` (masked diffusion transformer and trainer) → `mixer`
(ratio-exact, resumable streaming of packed sequences) | `pipeline` (tokenize jobs on Ray),
independent siblings → `tokenizers` (text, image and audio codecs behind one contract, the
unified vocabulary) → `dataset` (the on-disk format, storage, the domain's names) → `config`
(typed configs) | `cluster` (starting or joining Ray) | `faults` (crash injection for tests) |
`units` (sizes for people) → `errors` (and the quarantine reasons). Importing the package
imports nothing heavy.
"""

__version__ = "0.1.0"
