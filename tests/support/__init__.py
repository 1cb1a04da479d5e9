"""Test-side helpers for kubesolo.fleet: a real OCI registry, artifact builders, playbook runs.

Nothing here imports the collection under test: the helpers push and inspect artifacts with
plain ``requests`` so that the tests stay independent of the code they check.
"""
