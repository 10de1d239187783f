"""RandAugment-style policy (placeholder until the full policy lands)."""


def rand_augment(x, rng, n, magnitude):
    raise NotImplementedError("RandAugment is not implemented yet")
