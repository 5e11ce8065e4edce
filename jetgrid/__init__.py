"""jetgrid: a GPU job broker for ML inference, event-sourced on NATS JetStream."""

__version__ = "0.1.0"
