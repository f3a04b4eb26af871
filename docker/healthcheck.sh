#!/bin/bash
# A node container is healthy when this member serves: its pvc daemon runs, and on a
# coordinator its ZooKeeper member is in the ensemble and its Redis answers.
exec /opt/pvc/src/.venv/bin/python -m workers.container health
