"""One module per command: typed config, `run(cfg) -> Path`, and a thin Hydra shim."""
