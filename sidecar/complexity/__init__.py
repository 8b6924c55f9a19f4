"""The complexity signal: prompt signals, the additive ordinal model that scores
them, and (off the request path) its training and evaluation."""
