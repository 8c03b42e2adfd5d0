"""Profiling: measure subnets on a device, fit its predictors, and search within its budgets.

Modules, in the order data flows (import what you need from each; nothing is imported here):

* :mod:`host.profiling.plan`           which subnets a campaign measures, in which order
* :mod:`host.profiling.store`          the durable SQLite campaign store
* :mod:`host.profiling.build`          gates -> extracted subnet -> runtime artifact
* :mod:`host.profiling.measurers`      the device's agent as a campaign / live search sees it
* :mod:`host.profiling.runner`         run a plan on one or several devices
* :mod:`host.profiling.data`           a campaign's measurements as fit data (statistics, drift)
* :mod:`host.profiling.predictor`      per-layer latency and memory predictors
* :mod:`host.profiling.device_profile` a device's fitted predictors as JSON under ``device_profiles/``
* :mod:`host.profiling.budget`         the device-budget search and budget-aware generation
"""
