"""The torch-free contract every layer shares: the folder layout, the parameter and metric
registries, units, storage URIs and the MNIST files.
"""
