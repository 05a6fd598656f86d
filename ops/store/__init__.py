"""Storage: PostgreSQL, the system of record (``pg``, ``migrate``, ``writer``, ``journal``,
``reader``), and Redis (``redis_store``, ``bus``).

Nothing is imported here on purpose: a worker that never touches a database must not pay for
importing psycopg.
"""
