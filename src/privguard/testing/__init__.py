"""Harnesses for tests and benchmarks, not product code: a real ``privguard serve`` process on
a free loopback port (``servers``) and the query streams that evaluate the gateway's detectors
(``streams``). Nothing in ``privguard`` outside this package imports it."""
