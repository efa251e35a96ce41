"""gan2shape: GAN2Shape (Pan et al., ICLR 2021) and its ReScience C 2022 extensions.

One module per paper concept:

* :mod:`gan2shape.gan.stylegan2` -- official-layout StyleGAN2 generator / discriminator
* :mod:`gan2shape.method.networks`  -- the depth (D), albedo (A), view (V), light (L) nets and the offset encoder (E)
* :mod:`gan2shape.method.renderer`  -- depth map -> mesh -> pytorch3d rasterisation, warps, normals, shading
* :mod:`gan2shape.method.losses`    -- photometric, perceptual, smoothness, discriminator-feature, latent losses
* :mod:`gan2shape.method.priors`    -- ellipsoid, masked box, smoothed box and confidence shape priors
* :mod:`gan2shape.method.sampling`  -- view/light samplers, pseudo samples, projected samples
* :mod:`gan2shape.method.trainer`   -- the stage/step schedule (single image, joint, generalized, init iterations)
* :mod:`gan2shape.method.metrics`   -- SIDE and MAD
"""

__version__ = "0.1.0"
