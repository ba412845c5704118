"""The confirmation stage: the top trials sampled again, several seeds each, paired noise, ties
called.
"""
