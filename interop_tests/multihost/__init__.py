"""Multi-host interop: Python and BEAM nodes on separate hosts made of network namespaces.

See README.md in this folder: how the hosts are built, how to run the suite, what it tests.
"""
