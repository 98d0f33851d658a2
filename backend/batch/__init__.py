"""A batch of rigging jobs on a Ray cluster (``scripts/batch_rig.py --ray``; docs/batch.md).

``plan``: the request and its items (no Ray); ``report``: report.json, written once per item, and
the terminal's progress line (no Ray); ``work``: what runs on the workers (the stages on job
folders, the model worker, the Blender worker processes); ``driver``: the Ray side that schedules
it all and retries what a dead worker left. Ray is an optional extra (``pip install -e '.[ray]'``):
only ``driver`` imports it, so the backend, the add-on and the plain batch script never need it.
"""

RAY_HINT = "Ray is not installed in the backend's environment: pip install -e '.[ray]' (or 'ray[default]>=2.40')"
