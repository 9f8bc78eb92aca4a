"""infodecomp: information decomposition of text-to-image diffusion models (arXiv 2310.07972)."""

__version__ = "0.1.0"
