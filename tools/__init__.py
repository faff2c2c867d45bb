"""Commands for users that are not pipeline stages: `python -m tools.predict` (new images) and
`python -m tools.rerun_check` (`make rerun-check`). They read the pipeline's files
(stages/paths.py) through the stages' own readers.

Importing `stages` first pins OpenBLAS (stages/__init__.py) before NumPy loads, so a tool
computes exactly as the stages do.
"""

import stages  # noqa: F401  (the BLAS pin, before anything imports NumPy)
