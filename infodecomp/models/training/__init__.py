"""Training the learned ShapesWorld model (models.families.shapes_learned): settings (what a run
does, importable without torch), data (the training distribution, objective and held-out loss),
probe (the relation probe), trainer (the resumable training loop, warm start, export) and card
(the model card)."""
