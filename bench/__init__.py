"""chatops benchmarks: ``python -m bench`` (``make bench``) runs every benchmark module and records the table.

A benchmark is one module in this package exposing ``NAME`` (``str``), ``TITLE`` (``str``) and
``run(ctx: Context) -> list[Row]``; optional ``ORDER`` (``int``, lower runs first) and ``NEEDS`` (names of
benchmarks whose observations it reads, run first when it is chosen alone). See bench/README.md.
"""
