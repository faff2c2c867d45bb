"""numpynet: a small neural-network library in pure NumPy, the core of the pipeline.

No file paths, no params.yaml, no printing: arrays in, arrays out. The stages in
`stages/` read files and params and call into it; tests and benchmarks use it directly.
"""
