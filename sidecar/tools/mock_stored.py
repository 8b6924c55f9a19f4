"""The Responses answers a mock endpoint stored, and the operations on them, as
OpenAI documents them: retrieve (GET /v1/responses/{id}), delete (DELETE), cancel
(POST .../cancel, background responses only), list the input (GET .../input_items).
A Responses request continuing an answer this endpoint did not produce, or any of
these on one, gets OpenAI's 404. A `background` request is answered at once as
`queued`; retrieving it later finds it completed."""

from __future__ import annotations

from aiohttp import web

KEPT = 5_000   # a provider keeps them for weeks; enough for any test or load run


def _not_found(response_id: str) -> web.Response:
    return web.json_response({"error": {"message": f"Response with id '{response_id}' not found.",
                                        "type": "invalid_request_error", "param": None,
                                        "code": None}}, status=404)


def input_items(body: dict) -> list[dict]:
    """The request's input as the items input_items lists."""
    value = body.get("input")
    if isinstance(value, str):
        value = [{"role": "user", "content": [{"type": "input_text", "text": value}]}]
    items = [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
    return [{"id": f"msg_in{i:04d}", "type": "message", "status": "completed", **item}
            for i, item in enumerate(items)]


class StoredResponses:
    def __init__(self):
        self.kept: dict[str, dict] = {}   # id -> {"response", "input", "background"}, oldest first

    def __contains__(self, response_id) -> bool:
        return response_id in self.kept

    def store(self, response: dict, body: dict) -> dict:
        """Keep `response` (completed); what the client is answered now."""
        background = body.get("background") is True
        self.kept[response["id"]] = {"response": response, "input": input_items(body),
                                     "background": background}
        if len(self.kept) > KEPT:
            del self.kept[next(iter(self.kept))]
        if not background:
            return response
        return {**response, "status": "queued", "output": [], "usage": None}

    def routes(self, app: web.Application, received, echo: dict) -> None:
        """Serve the operations on `app`; `received` records each request, `echo`
        names the endpoint on each answer."""
        async def operation(request: web.Request) -> web.Response:
            received(request, b"")
            answer = await _operation(request)
            answer.headers.update(echo)
            return answer

        async def _operation(request: web.Request) -> web.Response:
            response_id, action = request.match_info["id"], request.match_info.get("action", "")
            kept = self.kept.get(response_id)
            if kept is None:
                return _not_found(response_id)
            if request.method == "DELETE":
                del self.kept[response_id]
                return web.json_response({"id": response_id, "object": "response.deleted",
                                          "deleted": True})
            if action == "input_items":
                items = kept["input"]
                return web.json_response({"object": "list", "data": items, "has_more": False,
                                          "first_id": items[0]["id"] if items else None,
                                          "last_id": items[-1]["id"] if items else None})
            if action == "cancel" and not kept["background"]:
                return web.json_response({"error": {
                    "message": "Only responses created with background=true can be cancelled.",
                    "type": "invalid_request_error", "param": None, "code": None}}, status=400)
            return web.json_response(kept["response"])

        app.router.add_route("GET", "/{prefix:.*}/responses/{id}", operation)
        app.router.add_route("DELETE", "/{prefix:.*}/responses/{id}", operation)
        app.router.add_route("POST", "/{prefix:.*}/responses/{id}/{action:cancel}", operation)
        app.router.add_route("GET", "/{prefix:.*}/responses/{id}/{action:input_items}", operation)
