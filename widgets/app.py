"""The latentsky app for ``panel serve``.

    panel serve widgets/app.py --warm                  # the bundled sample's results
    panel serve widgets/app.py --warm --args DIR       # a pipeline or synth folder, a store, a Parquet table

``--warm`` runs this script once at start-up, so Datashader's compilation and
the data loading happen before the first page opens (they are cached for
every later session).  All the logic lives in :mod:`latentsky.ui`.
"""

import sys

import panel as pn

from latentsky.ui.app import App, load_data
from latentsky.viz.latent import warm_up

pn.extension("tabulator", notifications=True)
warm_up()
app = App(load_data(sys.argv[1] if len(sys.argv) > 1 else None))
app.sync_url()
app.servable(title="latentsky")
