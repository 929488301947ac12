"""rewatch: evidence-grounded video reasoning data, the O&R reward, training and evaluation."""

__version__ = "0.1.0"
