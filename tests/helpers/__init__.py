"""What the tests share besides fixtures: model objects, the replay oracle, a Stabilize app, and
the scripts tests run as child processes (each runnable as ``python tests/helpers/NAME.py``)."""
