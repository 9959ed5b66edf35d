"""Worker streams: where a ``CoordinateWorker`` stream from a worker ends.

``_hub`` serves the stream on both paths (ours and the Rust worker's), keeps
membership and liveness, persists membership transitions, re-places the
replicas of dead workers and rebalances when workers join. It reports worker
events to the term's epoch coordinator through the ``EpochCoordinator``
protocol and never imports the control loop.
"""
