"""The chaos suite (issue 17): faults on the local real cluster, measured (see harness.py)."""
