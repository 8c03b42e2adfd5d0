"""Scripts that run on a device with its own Python (standard library only), sent by ``host.deploy.deployer``."""
