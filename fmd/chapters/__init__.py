"""The experiments, one module per notebook chapter: configs, grids with their defaults, runs, table rows.

``fmd/chapters/chNN_<chapter>.py`` defines what ``notebooks/NN_<chapter>.ipynb`` runs; its figures are
drawn by ``fmd/plots/chNN_<chapter>.py``. Imports go one way: notebooks → fmd.chapters →
(fmd.plots for drawing; fmd.train, fmd.models, fmd.conv, … for the work). A chapter that reuses
another's runs calls that chapter's definition (chapter 08 asks ch04 and ch05 for their configs).
"""
