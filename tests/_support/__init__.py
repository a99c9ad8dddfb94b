"""Helpers shared by test modules, imported as ``_support.<module>``.

Test modules must not import from ``conftest``: with several test folders on
one pytest command line, ``conftest`` names whichever folder's conftest was
imported first.  ``tests/`` is on ``sys.path`` (pytest puts it there for the
root ``tests/conftest.py``), so this package is importable from every test
folder.
"""
