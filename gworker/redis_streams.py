"""The former home of :class:`~gworker.redis.RedisStreamQueue`: existing
imports (``from gworker.redis_streams import RedisStreamQueue``) keep working.
New code imports from :mod:`gworker.redis`."""
from .redis.streams import BlockingConnection, GeventConnection, RedisStreamQueue

__all__ = ["RedisStreamQueue", "GeventConnection", "BlockingConnection"]
