"""spectra-halton: an example Spectra plugin (a sampler and a feature map the core lacks).

Importing this package registers, through the core's own decorators,

* sampler ``halton`` — randomized Halton quasi-Monte-Carlo rows (Halton 1960; Owen 2017,
  arXiv 1706.02808), :mod:`spectra_halton.halton`;
* feature map ``poisrf`` — Poisson random features, a discretely-induced random feature map
  (Likhosherstov et al. 2022, arXiv 2205.15317), :mod:`spectra_halton.poisrf`.

Spectra imports it through the ``spectra.plugins`` entry point declared in ``pyproject.toml``;
its Hydra configs (``conf/attention/{sampler,feature_map}/``) reach Hydra through the search-path
plugin in ``hydra_plugins/spectra_halton_searchpath``.
"""

from spectra_halton import halton, poisrf
from spectra_halton.halton import HaltonSampler
from spectra_halton.poisrf import PoissonRandomFeatures

__all__ = ["HaltonSampler", "PoissonRandomFeatures", "halton", "poisrf"]
__version__ = "0.1.0"
