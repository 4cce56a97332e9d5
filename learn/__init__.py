"""Learning from what agents observe: a region's delta stream as training data for the world model.

    log.py           consume a replica's stream from a durable offset of the learner's own
    trajectories.py  observations -> per-entity trajectories on the world's time grid -> samples
    shards.py        content-addressed training shards and the per-world index (load_rollouts)

Nothing is imported here: `import learn` stays cheap, and each module pulls in torch only if it needs it.
"""
