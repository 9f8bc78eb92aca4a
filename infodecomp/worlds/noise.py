"""ShapesWorld's pixel noise, importable without torch (the config schema's defaults read it)."""

SIGMA0 = 0.25  # pixel noise of the data distribution around each rendered scene
