"""lwst: geometric and texture neural style transfer (Learning to Warp for Style Transfer)."""

__version__ = "0.1.0"
