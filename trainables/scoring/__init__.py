"""Sample quality: the MNIST feature network, FID/KID and friends, their intervals and paired
comparisons.
"""
