"""The local archive: a loopback HTTP server speaking enough of the archives' protocols
for the clients, the tests and the offline classroom mode."""
