"""Fixtures shared by the packages' tests: real servers on loopback.

Not a published package.  The pytest plugin (:mod:`smtp_testkit.plugin`) is
loaded through its entry point wherever this package is installed, which
the shared ``test`` dependency group does for every package.
"""
