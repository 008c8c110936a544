"""gworker: background workers for gevent programs, with atasker's worker API."""
__version__ = "0.1.0.dev0"
