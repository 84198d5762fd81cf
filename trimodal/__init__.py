"""trimodal: data pipeline, mixer and trainer for tri-modal masked diffusion models.

Subpackages: `pipeline` (Ray Data tokenize jobs, the on-disk dataset), `tokenizers` (text,
image and audio codecs behind one contract, the unified vocabulary), `mixer` (ratio-exact,
resumable streaming of packed sequences), `model` (masked diffusion transformer and trainer),
`jobs` (thin entry points). Importing the package imports nothing heavy.
"""

__version__ = "0.1.0"
