"""Probe a device for the agent: ``python -c SOURCE '{"required": [...], "runtimes": {...}, "workdir": W, "port": P}'``.

Prints one line ``NNF-PROBE {json}``: Python version, missing modules, runtimes present, free disk under the
workdir, whether it is writable, CPU count, and whether the agent port is free on the loopback.
"""
import json
import os
import socket
import sys

a = json.loads(sys.argv[1])
def has(m):
    try:
        import importlib.util
        return importlib.util.find_spec(m) is not None
    except (ImportError, ValueError, AttributeError):
        return False
out = {"python": list(sys.version_info[:3]), "executable": sys.executable, "platform": sys.platform}
try:
    out["machine"] = os.uname().machine
except AttributeError:
    out["machine"] = "unknown"
out["missing"] = [m for m in a["required"] if not has(m)]
out["runtimes"] = dict((k, [m for m in v if has(m)]) for k, v in a["runtimes"].items())
p = a["workdir"]
while p and not os.path.exists(p):
    p = os.path.dirname(p)
p = p or "/"
st = os.statvfs(p)
out["free_bytes"] = st.f_bavail * st.f_frsize
out["existing_parent"] = p
out["writable"] = os.access(p, os.W_OK)
out["cpu_count"] = os.cpu_count()
out["port_free"] = None
if a["port"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", a["port"]))
        out["port_free"] = True
    except OSError:
        out["port_free"] = False
    finally:
        s.close()
print("NNF-PROBE " + json.dumps(out))
