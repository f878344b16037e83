"""radimg: a load-balanced distributed wide-field radio-interferometric imager."""

__version__ = "0.1.0"
