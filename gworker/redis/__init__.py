"""gworker and Redis: queue workers fed by Redis Streams
(:class:`RedisStreamQueue`, see :mod:`gworker.redis.streams`).

Needs redis-py: ``pip install 'gworker[redis]'``. ``gworker.redis_streams``
(the module's former name) still imports the same names.
"""
from .streams import BlockingConnection, GeventConnection, RedisStreamQueue

__all__ = ["RedisStreamQueue", "GeventConnection", "BlockingConnection"]
