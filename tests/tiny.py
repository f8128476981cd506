"""Hydra overrides shared by the end-to-end tests: the smallest model that still runs every path."""

TINY_MODEL = [
    "model.embed_dim=16",
    "model.ffn_dim=32",
    "model.head_dim=8",
    "model.head_hidden_dim=16",
]
