"""How an agent runs, wherever it runs, without Ray: its executor (instance, bounded priority
mailbox, workers), streamed replies, owned background loops, and ``LocalRuntime``, which runs
every agent on one asyncio loop. The Ray runtimes (:mod:`runtime.cluster`, :mod:`runtime.serve`)
run the same executor in actors and replicas."""
