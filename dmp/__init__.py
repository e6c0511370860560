"""dmp: an audience data management platform for B2B lead nurturing."""

__version__ = "0.1.0"
