"""lmforge: raw text to a trained, evaluated and usable small language model.

The package is laid out as the pipeline it implements (see README.md): data -> models -> train ->
eval -> generate. Every stage reads the artifacts of the one before from disk.
"""

__version__ = "0.1.0"
