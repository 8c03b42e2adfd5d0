"""``python -c SOURCE FILE SHA256``: exit code 0 when FILE's sha256 is SHA256, 1 otherwise."""
import hashlib
import sys

with open(sys.argv[1], "rb") as f:
    sys.exit(hashlib.sha256(f.read()).hexdigest() != sys.argv[2])
