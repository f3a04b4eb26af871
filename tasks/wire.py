"""A task's message as Celery (protocol 2, JSON) and kombu's Redis transport put it in a
queue, written without them: every command that submits an operation imported Celery, kombu
and redis-py for one LPUSH (over 100 ms of its start-up). What Celery itself writes is
compared with this in tests/integration/test_worker.py.

kombu keeps a queue's waiting messages in a list named after the queue (priority 0, the only
one pvc uses); a worker pops them from its tail, so a message is pushed at its head.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

NO_WORKFLOW = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def message(task: str, task_id: str, args: list[Any], queue: str, argsrepr: str,
            kwargsrepr: str) -> bytes:
    """The JSON a Celery client would push for send_task(task, args, task_id=task_id,
    queue=queue, argsrepr=…, kwargsrepr=…)."""
    body = json.dumps([args, {}, NO_WORKFLOW]).encode()
    headers: dict[str, Any] = {
        "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": task_id, "parent_id": None,
        "argsrepr": argsrepr, "kwargsrepr": kwargsrepr,
        "origin": f"gen{os.getpid()}@{socket.gethostname()}", "ignore_result": None,
        "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {}}
    properties: dict[str, Any] = {
        "correlation_id": task_id, "reply_to": str(uuid.uuid4()),
        "argsrepr": argsrepr, "kwargsrepr": kwargsrepr, "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
        "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return json.dumps({"body": base64.b64encode(body).decode(),
                       "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": headers, "properties": properties}).encode()
