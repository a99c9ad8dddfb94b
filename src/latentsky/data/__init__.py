"""Data shipped with latentsky: the bundled sample and how it was built."""
