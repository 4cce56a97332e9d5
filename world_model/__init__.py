"""World model: a 2-D physics simulator, a JEPA trained on it, and the
serving side (predict / surprise / plan, micro-batched).

Import what you need from its module: `world_model.train` (worldstate train),
`world_model.evaluate` (worldstate eval), `world_model.inference.WorldModel`
and `world_model.batching.MicroBatcher` for serving, `world_model.state` for
the shape of a query. The package itself imports nothing, so a serving node
never loads the training code. This package imports nothing from
`consistency`, `api`, `service` or `deploy`.
"""
