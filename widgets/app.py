"""The latentsky app for ``panel serve``.

    panel serve widgets/app.py --warm                  # the bundled sample's results
    panel serve widgets/app.py --warm --args DIR       # a pipeline or synth folder, a store, a Parquet table
    panel serve widgets/app.py --warm --args DIR --dask   # the table as a Dask DataFrame (10^7-10^8 rows)

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
args = [a for a in sys.argv[1:] if a != "--dask"]
app = App(load_data(args[0] if args else None, **({"dask": True} if "--dask" in sys.argv[1:] else {})))
app.sync_url()
app.servable(title="latentsky")
