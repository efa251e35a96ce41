"""The StyleGAN2 side: the generator/discriminator, GAN inversion, GAN training."""
