"""Export and import: a trained run <-> a standard model folder other tools load (Hugging Face).

``hf_maps`` holds the knowledge (which architecture, which config fields, which tensor names), ``hf``
the folders and files, ``verify`` the equivalence check both directions end with.
"""

from lmforge.export.hf import export_hf, import_hf

__all__ = ["export_hf", "import_hf"]
