"""queue.v1.Queue: the durable node-wide queue."""
