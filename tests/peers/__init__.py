"""Test peers: the servers and apps the tests run against, started on 127.0.0.1."""
