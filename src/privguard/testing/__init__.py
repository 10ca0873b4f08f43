"""Harnesses for tests and benchmarks, not product code: a real ``privguard serve`` process on
a free loopback port (``servers``) and the query streams that evaluate the gateway's detectors
(``streams``), and DP-SGD trainers with planted bugs, the known-answer corpus of
``dp-audit --train-fn`` (``dp_bugs``). Nothing in ``privguard`` outside this package imports it."""
