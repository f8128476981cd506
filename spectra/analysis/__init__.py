"""Studies as functions, rows in and rows out (pandas DataFrames); ``scripts/`` hold their
command lines and plots.

* :mod:`~spectra.analysis.kernel_error`: kernel and attention error of samplers × feature maps;
* :mod:`~spectra.analysis.capture`: queries and keys captured from a trained checkpoint;
* :mod:`~spectra.analysis.machine`: the machine a measurement ran on (one helper for every
  script);
* :mod:`~spectra.analysis.config`: the composed ``train`` config (Hydra), as ``train.py`` sees it.
"""
