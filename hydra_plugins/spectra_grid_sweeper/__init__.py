"""Hydra's handle on :class:`spectra.sweeps.sweeper.GridSweeper` (``hydra/sweeper=spectra_grid``).

Hydra instantiates sweepers only from modules of the ``hydra_plugins`` namespace package (no
``__init__.py`` in ``hydra_plugins/`` itself), which it imports at start-up; the logic lives in
``spectra.sweeps`` and this subclass only gives it a name Hydra accepts. Importing it is cheap
(no torch, no Lightning).
"""

from __future__ import annotations

from spectra.sweeps.sweeper import GridSweeper


class SpectraGridSweeper(GridSweeper):
    """The Spectraformer grid sweeper (see :mod:`spectra.sweeps.sweeper`)."""
