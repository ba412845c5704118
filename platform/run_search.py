"""Placeholder until the search lands (issue 5)."""
import sys

print("run_search.py: the search is not implemented yet (see issue 5)", file=sys.stderr)
sys.exit(1)
