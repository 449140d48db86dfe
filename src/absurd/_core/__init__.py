"""I/O-free logic shared by the sync and async clients."""
