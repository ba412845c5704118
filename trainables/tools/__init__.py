"""Measurement tools run by hand or by the GPU check: benchmarks, probes, the precision table,
known answers.
"""
