"""Q1 follow-up: ONE policy message per request (request headers SKIP, body BUFFERED) that still routes.

Chain: ext_proc(SKIP, BUFFERED) -> envoy.filters.http.buffer -> router.
The buffer filter holds the headers until the body is complete; ext_proc's decodeData holds the
body until the body reply; so the router's decodeHeaders (route pick) runs after the body reply.
The body reply writes dynamic metadata sg.route / sg.rid, a dummy header mutation (clearRouteCache
needs has_header_mutation) and clear_route_cache. Routes match on dynamic metadata and set
x-request-id from %DYNAMIC_METADATA(sg:rid)%. GET /v1/models is an Envoy direct_response.
"""

import asyncio

import httpx
from google.protobuf import struct_pb2

import harness
from harness import (bootstrap, cont, dump_log, extproc_filter, extproc_cluster, hm, pb, ports, run,
                     upstream_cluster, API, T)

harness.LIMIT = 400


def build(sock_dir: str, up: int) -> dict:
    lp, ap = ports()
    f = extproc_filter(
        "policy",
        {"request_header_mode": "SKIP", "request_body_mode": "BUFFERED",
         "response_header_mode": "SKIP", "response_body_mode": "NONE"},
        request_attributes=["request.path", "request.method", "request.headers['x-user']"],
        metadata_options={"receiving_namespaces": {"untyped": ["sg"]}},
    )
    buf = {"name": "envoy.filters.http.buffer",
           "typed_config": {T: f"{API}.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}
    routes = [
        {"name": "models", "match": {"path": "/v1/models", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
         "direct_response": {"status": 200, "body": {"inline_string": '{"object":"list","data":[]}'}},
         "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
         "typed_per_filter_config": {"envoy.filters.http.ext_proc": {T: f"{API}.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "disabled": True}}},
        {"name": "route_b",
         "match": {"prefix": "/", "dynamic_metadata": [{"filter": "sg", "path": [{"key": "route"}], "value": {"string_match": {"exact": "b"}}}]},
         "request_headers_to_add": [{"header": {"key": "x-request-id", "value": "%DYNAMIC_METADATA(sg:rid)%"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                                    {"header": {"key": "x-went", "value": "b"}}],
         "request_headers_to_remove": ["x-user"],
         "route": {"cluster": "b"}},
        {"name": "unrouted", "match": {"prefix": "/"},
         "direct_response": {"status": 500, "body": {"inline_string": "unrouted"}}},
    ]
    return bootstrap(lp, ap, [f, buf], routes, [extproc_cluster(sock_dir, 1), upstream_cluster("a", up), upstream_cluster("b", up)])


NEW_BODY = b'{"rewritten": true}'


def handler(stage, s, req, st):
    if s["kind"] == "request_body" and b"reject" in req.request_body.body:
        r = pb.ProcessingResponse()
        r.immediate_response.status.code = 429
        r.immediate_response.body = b'{"error":{"message":"quota exceeded","type":"rate_limit_error"}}'
        r.immediate_response.headers.CopyFrom(hm({"content-type": "application/json", "retry-after": "3"}))
        r.immediate_response.details = "sidegate_quota"
        return [r]
    if s["kind"] == "request_body":
        r = pb.ProcessingResponse()
        c = r.request_body.response
        c.header_mutation.CopyFrom(hm({"x-dummy": "1"}))
        c.body_mutation.body = NEW_BODY
        c.clear_route_cache = True
        md = struct_pb2.Struct()
        md.update({"sg": {"route": "b", "rid": "rid-123"}})
        r.dynamic_metadata.CopyFrom(md)
        return [r]
    return [cont(s["kind"])]


def client(port: int):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.post("/v1/chat/completions", content=b'{"model":"m"}',
                   headers={"content-type": "application/json", "x-user": "alice", "x-request-id": "client-id"})
        out.append(("POST body", r.status_code, r.json()["echo"] if r.status_code == 200 else r.text))
        r = c.post("/v1/chat/completions", content=b'{"model":"m"}' * 20000,
                   headers={"content-type": "application/json"})
        out.append(("POST 260KB body", r.status_code, r.json()["echo"] if r.status_code == 200 else r.text))
        r = c.post("/v1/chat/completions", content=b'{"model":"reject"}', headers={"content-type": "application/json"})
        out.append(("POST rejected by body reply", r.status_code, r.text + " retry-after=" + r.headers.get("retry-after", "-")))
        r = c.post("/v1/empty")
        out.append(("POST nobody", r.status_code, r.text))
        r = c.get("/v1/models")
        out.append(("GET /v1/models", r.status_code, r.text))
    return out


async def main():
    res, env = await run(build, handler, client)
    for name, code, echo in res:
        if isinstance(echo, dict):
            print(name, code, "upstream saw:", echo["method"], echo["path"],
                  {k: v for k, v in echo["headers"].items() if k in ("x-went", "x-dummy", "x-user", "x-request-id", "content-length", "transfer-encoding")},
                  "body:", echo["body"][:60])
        else:
            print(name, code, echo[:120])
    dump_log("ext_proc messages")
    print("\n".join(env.access()))


asyncio.run(main())
