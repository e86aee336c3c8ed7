"""Agents across processes and nodes on Ray: ``RayRuntime`` (:mod:`.ray_runtime`), the actor that
hosts one agent replica (:mod:`.host`), the registry of members and shared state and its feeds
(:mod:`.registry`, :mod:`.client`), the node-local shm event bus (:mod:`.bus`), message types
shipped by value (:mod:`.shipping`) and Ray's errors as the SDK's (:mod:`.ray_errors`).

Nothing is imported here: importing a module of this package must not import Ray for one that
does not need it."""
