"""Real peers for the deploy tests: an OpenSSH server fixture and an ADB-protocol device emulator."""
