"""The HTTP side of the service: REST `/v1`, live events over SSE, webhooks, auth, `/metrics`, health."""
