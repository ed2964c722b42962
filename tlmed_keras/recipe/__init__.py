"""``python -m tlmed_keras.recipe``: the recipe's members (backbones x seeds) trained, scored
with their ensemble on test, and the export command (see ``__main__``)."""
