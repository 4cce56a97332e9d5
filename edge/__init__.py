"""Edge nodes: a subset of one world held near the sensors, fed from the core.

An edge follows the CP tier (the world's params and physics through the watch, the model
manifest through the core's positions), its entities through the entity subscription,
and the serving model's blob by hash; it keeps all of it in SQLite, so a restarted edge
answers at once, and labels every answer with how stale it may be (edge/freshness.py).
Observations posted to it are stored first and forwarded to its region, idempotent by
event id (edge/forwarder.py).
"""
