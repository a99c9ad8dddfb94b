"""latentsky: query astronomy archives, download spectra reliably, embed them
with echo-state networks, autoencode them into a latent map and explore it.

Heavy dependencies (TensorFlow, Panel) are imported lazily by the modules that
need them, so ``import latentsky`` and the ``latentsky`` command start fast.
"""

from latentsky.config import conf
from latentsky.exceptions import LatentskyError, LatentskyWarning

__version__ = "0.1.0"

__all__ = ["conf", "LatentskyError", "LatentskyWarning", "__version__"]
