"""The steps before the map: Query, Download, Embed (ingest + ESN readouts) and Train.

Each step is a ``param``-based :class:`panel.viewable.Viewer` whose work is a
plain method (``Query.run()``, ``Download.start()``...), so tests drive them by
setting parameters and calling methods; the buttons call the same methods in a
background thread so the page stays responsive.  Long work reports
:class:`~latentsky.progress.ProgressEvent` objects to a :class:`ProgressView`,
the one progress widget of the app.  Errors end in :attr:`error` (a message
naming the parameter), never a traceback on the page.

The steps live in :mod:`.step_base` (what they share), :mod:`.step_fetch`
(Query, Download) and :mod:`.step_model` (Embed, Train); this module gathers them.
"""

from latentsky.ui.step_base import Cancelled, ProgressView, form
from latentsky.ui.step_fetch import (
    Download,
    Query,
    estimated_size,
    read_coordinate_table,
)
from latentsky.ui.step_model import Embed, Train

__all__ = [
    "Cancelled",
    "Download",
    "Embed",
    "ProgressView",
    "Query",
    "Train",
    "estimated_size",
    "form",
    "read_coordinate_table",
]
