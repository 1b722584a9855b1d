"""One TAO round: the recipe (prepare, generate, score, train, register, gate), its parts and its process."""
