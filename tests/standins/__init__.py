"""Stand-ins for upstream components the test host cannot run, for tests only.

Each stand-in imitates, on the KWOK local host, the part of an upstream project that vnest's tests
touch (its API objects and how they change), so vnest's own code can be tested against a real API
server. None of them is the upstream project, and nothing in ``vnest/`` imports them.
"""
