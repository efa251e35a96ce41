"""The GAN2Shape method: configuration, networks, renderer, losses, priors, samples, the steps and the training loop."""
