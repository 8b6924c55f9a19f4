"""The per-request path: nginx's socket (wire) → features → policy → limits →
decision (app), plus the feedback and metrics around it and the server that runs it."""
