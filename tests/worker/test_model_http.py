"""How the http driver reads a model server: where a body goes on an OpenAI-compatible one.
(Reading capped answers and event streams is tested through the driver, in test_drivers.)"""

from __future__ import annotations

from typing import Any

import pytest

from p2psched.worker.model_http import request_url


@pytest.mark.parametrize(
    ("endpoint", "body", "posted"),
    [
        ("http://h:8000/v1", {"messages": []}, "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/", {"prompt": "p"}, "http://h:8000/v1/completions"),
        ("http://h/v1/completions", {"messages": []}, "http://h/v1/chat/completions"),
        ("http://h/v1/chat/completions", {"prompt": "p"}, "http://h/v1/completions"),
        ("http://h/api/generate", {"messages": []}, "http://h/api/generate"),
    ],
)
def test_http_an_openai_server_takes_chat_and_completions_at_their_own_paths(
    endpoint: str, body: dict[str, Any], posted: str
) -> None:
    assert request_url(endpoint, body) == posted
