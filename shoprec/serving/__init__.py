"""The HTTP server (app) and its micro-batching; imports no training code."""
