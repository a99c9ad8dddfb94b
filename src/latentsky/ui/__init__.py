"""The app's components: ``param``-based :class:`panel.viewable.Viewer` classes and their shared data store.

- :class:`~latentsky.ui.data.LatentData`: the latent table (pandas or Dask) and its spectra and images
  (one object, several views);
- :class:`~latentsky.ui.explore.Explore`: the Datashader latent map, tapped spectrum (with the reconstruction
  from its latent point, :mod:`latentsky.ui.reconstruct`, and image cutouts, :mod:`latentsky.ui.cutouts`),
  selection and exports;
- :class:`~latentsky.ui.steps.Query`, :class:`~latentsky.ui.steps.Download`,
  :class:`~latentsky.ui.steps.Embed`, :class:`~latentsky.ui.steps.Train`: the steps before the map
  (Train runs :mod:`latentsky.ui.train_worker` in a child process);
- :class:`~latentsky.ui.app.App`: all of them in one page (``widgets/app.py``, ``notebooks/app.ipynb``).

Panel, HoloViews and Datashader are imported by these modules, not by ``import latentsky``.
"""
