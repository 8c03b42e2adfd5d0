"""Deploying the on-device agent and reaching it: inventory, packaging, transports, tunnels.

- ``host.deploy.inventory``  the device inventory (TOML): how to reach each device, its Python/runtime/workdir
- ``host.deploy.package``    the reproducible, versioned agent tarball (agent package + generated stubs only)
- ``host.deploy.transport``  the transport interface (commands, files, streams to device ports) + ``local``
- ``host.deploy.ssh``        paramiko: host-key checking, exec, SFTP, ``direct-tcpip``
- ``host.deploy.adb``        ADB (adb-shell transports and keys): shell, sync push/pull, ``tcp:<port>`` streams
- ``host.deploy.deployer``   deploy / undeploy / logs / check over any transport; cleans up on failure
- ``host.deploy.forward``    local port forwarder (host loopback -> device stream)
- ``host.deploy.session``    a tunnel to a running agent that reconnects after a dropped connection
"""
