"""Federated training of a run config on Flower (``mtl-federate``; the ``[federated]`` extra).

:mod:`~runtime.federated.partition` shares one dataset among clients,
:mod:`~runtime.federated.clients` is a client's work through the ordinary runtime,
:mod:`~runtime.federated.flower` wires Flower's apps, strategies and simulation engine, and
:mod:`~runtime.federated.rounds` checkpoints rounds and writes the records.
"""
