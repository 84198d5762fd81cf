"""Tokenizers: the codecs behind one contract, their fingerprints and the unified vocabulary.

Owns: `base` (the Tokenizer contract and the registry that loads one by kind), `text`
(SentencePiece, and training it), `image` (a diffusers VQModel), `audio` (descript-audio-codec
DAC, imported through `dac_import`), `media` (decoding raw images and audio into what a codec
expects, and decoded media back into file bytes), `prepare` (one sample's way to codes, shared
by the tokenize job and the service), `placement` (text on CPUs, codecs on GPUs), `quality` (reconstruction metrics: PSNR, SSIM, SNR,
mel distance, and their intervals), `codecs` (small random-weight codecs built offline), `vocab` (the unified id space
derived from fingerprints) and `spec` (`TokenizerSpec`: how a config names a tokenizer, shared
by the tokenize, retokenize and train configs).

May import: `trimodal.dataset`, `trimodal.config`, `trimodal.cluster`, `trimodal.errors`
(enforced by `lint-imports`, see docs/design.md, "Layout and layers").
"""
