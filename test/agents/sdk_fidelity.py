"""The official `openai` Python SDK against trainflow's proxy in front of an engine (run by
test/agents/sdk-fidelity.ts, once per engine, with the agents venv's Python). Prints one JSON object of what the
SDK saw; the jest test asserts on it and on the npm SDK's observations alike.

    python sdk_fidelity.py SPEC_JSON     SPEC: {base, admin, ids: {letters, lt, e1, e2, tool_call, im_end}}
"""

import json
import sys
import urllib.request

import openai


def session(spec: dict, task: str) -> tuple[str, str]:
    req = urllib.request.Request(
        spec["base"] + "/admin/sessions",
        data=json.dumps({"task_id": task}).encode(),
        headers={"authorization": "Bearer " + spec["admin"], "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        body = json.loads(r.read())
    return body["session_id"], body["key"]


def client(spec: dict, task: str) -> tuple[str, openai.OpenAI]:
    sid, key = session(spec, task)
    return sid, openai.OpenAI(base_url=spec["base"] + "/v1", api_key=key, max_retries=0)


TOOLS = [
    {"type": "function", "function": {"name": "bash", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "submit", "parameters": {"type": "object", "properties": {}}}},
]


def streamed_and_final(c: openai.OpenAI, messages: list, allowed: list, seed: int, **kw) -> dict:
    body = {"allowed_token_ids": allowed}
    final = c.chat.completions.create(model="m", messages=messages, max_tokens=12, seed=seed, extra_body=body, **kw)
    text = ""
    for chunk in c.chat.completions.create(
        model="m", messages=messages, max_tokens=12, seed=seed, stream=True, extra_body=body, **kw
    ):
        for ch in chunk.choices:
            text += ch.delta.content or ""
    return {"streamed": text, "final": final.choices[0].message.content or ""}


def error_seen(e: openai.APIStatusError) -> dict:
    err = (e.body or {}) if isinstance(e.body, dict) else {}
    err = err.get("error", err)
    return {"status": e.status_code, "code": err.get("code"), "param": err.get("param")}


def error_of(fn) -> dict:
    try:
        fn()
    except openai.APIStatusError as e:
        return error_seen(e)
    return {"status": 200}


def main() -> None:
    spec = json.loads(sys.argv[1])
    ids = spec["ids"]
    letters = ids["letters"]
    msgs = [{"role": "user", "content": "write"}]
    out: dict = {}

    _, c = client(spec, "stream")
    out["stream_lt"] = [streamed_and_final(c, msgs, letters + [ids["lt"]], s) for s in range(12)]
    out["stream_utf8"] = [streamed_and_final(c, msgs, [ids["e1"], ids["e2"], letters[0]], s) for s in range(6)]

    sid, c = client(spec, "continue")
    first = "".join(
        ch.delta.content or ""
        for chunk in c.chat.completions.create(
            model="m",
            messages=msgs,
            max_tokens=12,
            seed=3,
            stream=True,
            extra_body={"allowed_token_ids": letters + [ids["lt"], ids["im_end"]]},
        )
        for ch in chunk.choices
    )
    c.chat.completions.create(
        model="m",
        max_tokens=2,
        messages=msgs + [{"role": "assistant", "content": first}, {"role": "user", "content": "more"}],
    )
    out["continue_session"] = sid

    # a multi-turn session that sends back the SDK's own message objects (letters and <|im_end|> only: single
    # tokens that never merge, so the replies re-tokenise as they were sampled)
    sid, c = client(spec, "multi-turn")
    history: list = list(msgs)
    for k, nxt in enumerate(["more", "again", None]):
        r = c.chat.completions.create(
            model="m",
            messages=history,
            max_tokens=6,
            seed=7 + k,
            extra_body={"allowed_token_ids": letters + [ids["im_end"]]},
        )
        if nxt is None:
            break
        history += [r.choices[0].message, {"role": "user", "content": nxt}]
    out["multi_turn_session"] = sid

    _, c = client(spec, "stop")
    body = {"allowed_token_ids": letters}
    full = c.chat.completions.create(model="m", messages=msgs, max_tokens=12, seed=5, extra_body=body)
    cut = c.chat.completions.create(model="m", messages=msgs, max_tokens=12, seed=5, stop=["Y"], extra_body=body)
    out["stop"] = {
        "full": full.choices[0].message.content,
        "cut": cut.choices[0].message.content,
        "finish": cut.choices[0].finish_reason,
    }

    lp = {"model": "m", "messages": msgs, "max_tokens": 4, "seed": 2, "logprobs": True, "top_logprobs": 3}
    r = c.chat.completions.create(**lp)
    out["top_logprobs"] = [[t.logprob for t in e.top_logprobs] for e in r.choices[0].logprobs.content]
    out["top_logprobs_streamed"] = [
        [t.logprob for t in e.top_logprobs]
        for chunk in c.chat.completions.create(**lp, stream=True)
        for ch in chunk.choices
        for e in (ch.logprobs.content if ch.logprobs else None) or []
    ]

    parts = [{"type": "text", "text": "You fix bugs."}, {"type": "text", "text": "Be brief."}]
    as_list = c.chat.completions.create(
        model="m",
        max_tokens=1,
        messages=[{"role": "system", "content": parts}, {"role": "user", "content": parts}],
    )
    as_text = c.chat.completions.create(
        model="m",
        max_tokens=1,
        messages=[
            {"role": "system", "content": "You fix bugs.\nBe brief."},
            {"role": "user", "content": "You fix bugs.\nBe brief."},
        ],
    )
    out["parts"] = {
        "list": as_list.model_extra["prompt_token_ids"],
        "text": as_text.model_extra["prompt_token_ids"],
    }

    def calls(choice, **kw) -> dict:
        try:
            r = c.chat.completions.create(
                model="m", messages=msgs, max_tokens=32, seed=1, tools=TOOLS, tool_choice=choice, **kw
            )
        except openai.APIStatusError as e:
            return {"error": error_seen(e)}
        m = r.choices[0].message
        return {
            "content": m.content,
            "names": [t.function.name for t in m.tool_calls or []],
            "finish": r.choices[0].finish_reason,
        }

    none = c.chat.completions.create(
        model="m",
        messages=msgs,
        max_tokens=8,
        seed=1,
        tools=TOOLS,
        tool_choice="none",
        extra_body={"allowed_token_ids": [ids["tool_call"], letters[0]]},
    ).choices[0]
    out["tool_choice"] = {
        "none": none.message.content,
        "none_ids": none.model_extra["token_ids"],
        "required": calls("required"),
        "named": calls({"type": "function", "function": {"name": "submit"}}),
        "single": calls("required", parallel_tool_calls=False),
        "single_auto": calls("auto", parallel_tool_calls=False),
    }

    r = c.chat.completions.create(model="m", messages=msgs, extra_body={"allowed_token_ids": letters})
    out["default_max_tokens"] = {
        "prompt": r.usage.prompt_tokens,
        "completion": r.usage.completion_tokens,
        "finish": r.choices[0].finish_reason,
    }
    long = [{"role": "user", "content": "run the tests " * 400}]
    out["context"] = error_of(lambda: c.chat.completions.create(model="m", messages=long, max_tokens=4))
    out["unknown"] = error_of(
        lambda: c.chat.completions.create(model="m", messages=msgs, max_tokens=2, extra_body={"foo": 1})
    )
    out["penalty"] = error_of(
        lambda: c.chat.completions.create(model="m", messages=msgs, max_tokens=2, frequency_penalty=0.5)
    )
    out["litellm_context"] = litellm_context_error(spec, long)
    print(json.dumps(out))


def litellm_context_error(spec: dict, long: list) -> str:
    """What litellm (mini-swe-agent's client) makes of a prompt over the context: the class it raises."""
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    _, key = session(spec, "litellm")
    try:
        litellm.completion(
            model="openai/policy",
            api_base=spec["base"] + "/v1",
            api_key=key,
            messages=long,
            max_tokens=4,
            num_retries=0,
        )
    except Exception as e:  # noqa: BLE001 - the class is the observation
        return type(e).__name__
    return "no error"


if __name__ == "__main__":
    main()
