"""cifar10: the CIFAR-10 dataset, apart from the network library.

- `cifar10.layout`: class names, the image shape and the row layout, pixel conversions;
- `cifar10.archive`: the safe reader of cifar-10-python.tar.gz (no extraction, restricted
  unpickling, size caps) and the sha256 fingerprints of the decoded arrays;
- `cifar10.images`: image files (PNG, JPEG, ...) turned into rows the way the model expects.

No project paths and no params.yaml here: the stages in `stages/` do the I/O.
"""
