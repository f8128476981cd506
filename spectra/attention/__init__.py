"""Attention modules, registered in ``spectra.registry.ATTENTIONS``."""
