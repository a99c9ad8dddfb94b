"""latentsky: query astronomy archives, download spectra reliably, embed them
with echo-state networks, autoencode them into a latent map and explore it.

Heavy dependencies (TensorFlow, Panel) are imported lazily by the modules that
need them, so ``import latentsky`` and the ``latentsky`` command start fast.
"""

from latentsky.config import conf
from latentsky.exceptions import LatentskyError, LatentskyWarning

__all__ = ["conf", "LatentskyError", "LatentskyWarning", "__version__"]


def __getattr__(name: str):
    # __version__ is the installed distribution's (pyproject.toml, the one source), looked up on
    # first use: importlib.metadata costs tens of ms that ``import latentsky`` does not pay
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("latentsky")
        except PackageNotFoundError:  # a source tree that was never installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'latentsky' has no attribute {name!r}")
