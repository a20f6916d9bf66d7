"""vnest: virtual Kubernetes clusters that live in one namespace of a host cluster."""

__version__ = "0.1.0"
