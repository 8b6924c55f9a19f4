"""Token counting: Anthropic's `POST /v1/messages/count_tokens` and OpenAI's
`POST /v1/responses/input_tokens` take the body a request would send and answer how
many input tokens it is, for the model that would serve it. Each is routed as that
request would be (rules, complexity, model name), to an endpoint of its API, so
the count is the chosen model's; lua mode rewrites `model` to that endpoint's.

A count generates nothing: it reserves and counts no tokens (its API is `count`),
only request limits apply. Anthropic and OpenAI do not charge for it either."""

from __future__ import annotations

API = "count"
# path -> (the API whose endpoints count it, the body reader)
COUNTED = {"/v1/messages/count_tokens": ("messages", "messages_counted"),
           "/v1/responses/input_tokens": ("responses", "responses_counted")}
