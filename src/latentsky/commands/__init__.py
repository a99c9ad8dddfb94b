"""Sub-commands of the ``latentsky`` command line, one module each (see cli.py)."""
