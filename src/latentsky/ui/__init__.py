"""The app's components: ``param``-based :class:`panel.viewable.Viewer` classes and their shared data store.

- :class:`~latentsky.ui.data.LatentData`: the latent table and its spectra (one object, several views);
- :class:`~latentsky.ui.explore.Explore`: the Datashader latent map, tapped spectrum, selection and exports;
- :class:`~latentsky.ui.query.Query`, :class:`~latentsky.ui.download.Download`,
  :class:`~latentsky.ui.pipeline.Embed`, :class:`~latentsky.ui.pipeline.Train`: the steps before the map;
- :class:`~latentsky.ui.app.App`: all of them in one page (``widgets/app.py``, ``notebooks/app.ipynb``).

Panel, HoloViews and Datashader are imported by these modules, not by ``import latentsky``.
"""
