"""The gRPC transport: servicers over the same use cases as REST, and the
interceptor that gives every call the same envelope (auth, deadline, error
mapping, request id, log line, metrics)."""
