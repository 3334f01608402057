"""Operations: HTTP metrics and request ids, readiness checks, the /metrics exposition."""
