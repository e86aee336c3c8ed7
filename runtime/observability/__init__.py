"""What a raygent process tells its operators: Prometheus metrics (:mod:`.metrics`) and
OpenTelemetry traces (:mod:`.telemetry`, the only module that imports OpenTelemetry)."""
