"""gworker and Redis: queue workers fed by Redis Streams
(:class:`RedisStreamQueue`, see :mod:`gworker.redis.streams`), and interval
and cron workers that run once per cluster (:class:`RedisSingleton`, see
:mod:`gworker.redis.singleton`).

Needs redis-py: ``pip install 'gworker[redis]'``. ``gworker.redis_streams``
(the former name of the streams module) still imports the same names.
"""
from .singleton import RedisSingleton
from .streams import BlockingConnection, GeventConnection, RedisStreamQueue

__all__ = ["RedisStreamQueue", "RedisSingleton", "GeventConnection", "BlockingConnection"]
