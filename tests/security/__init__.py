"""Security probes (issue 14): each test attacks a real fleet on loopback (or parses a
shipped deploy file) and asserts the attack fails. docs/security.md cites them."""
