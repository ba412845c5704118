"""The NCSN core: the conditional RefineNet, the noise ladder, denoising score matching, annealed
Langevin sampling, the trainer and how it runs on a device.
"""
