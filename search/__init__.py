"""Running a search: a validated spec (search_spaces) -> Ray cluster, Optuna searcher, ASHA, Tuner
-> experiment folder.
"""
