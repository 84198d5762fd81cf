"""The commands: one thin module per `trimodal` subcommand (tokenize, retokenize, inspect, migrate,
tokenizer, codec, mix, train, generate, demo), each reading its config or options, calling the
library and printing a summary; `demo_corpus` writes the demo's built-in corpus; `codec_eval` and
`codec_page` are `codec eval` / `codec compare` (scores and their page).

May import every layer below (`model`, `mixer`, `pipeline`, `tokenizers`, `dataset`, `config`,
`cluster`, `errors`) and `trimodal.cli` for the exit codes; nothing in the library imports a job
(enforced by `lint-imports`, see docs/design.md, "Layout and layers"). Ray is started or joined
only through `trimodal.cluster.ensure_ray`.
"""
