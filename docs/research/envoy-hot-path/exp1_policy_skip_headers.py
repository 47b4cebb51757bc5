"""Q1+Q2: router-level ext_proc with request_header_mode SKIP + request_body_mode BUFFERED.

- body reply sets x-route: b + clear_route_cache -> does the request re-route to route b?
- which request_attributes arrive on the body message and in what form?
- body reply mutates headers (set/remove) and replaces the body with a new content-length.
- POST without body, GET without body: does the ext_proc get any message?
"""

import asyncio
import json

import httpx

from harness import (API, T, bootstrap, cont, dump_log, extproc_filter, extproc_cluster, hm, pb, ports, run,
                     upstream_cluster, LOG, UPSTREAM)

ATTRS = [
    "request.path", "request.url_path", "request.method", "request.headers", "request.host",
    "request.scheme", "request.protocol", "request.id", "request.size", "request.total_size",
    "request.query", "request.useragent", "request.referer", "request.time", "request.duration",
    "xds.route_name", "xds.cluster_name", "xds.virtual_host_name", "source.address", "connection.id",
    "request.headers['x-foo']",
]


def build(sock_dir: str, up: int) -> dict:
    lp, ap = ports()
    f = extproc_filter(
        "policy",
        {"request_header_mode": "SKIP", "request_body_mode": "BUFFERED",
         "response_header_mode": "SKIP", "response_body_mode": "NONE"},
        request_attributes=ATTRS,
    )
    routes = [
        {"name": "route_b", "match": {"prefix": "/", "headers": [{"name": "x-route", "string_match": {"exact": "b"}}]},
         "request_headers_to_add": [{"header": {"key": "x-went", "value": "b"}}],
         "route": {"cluster": "b"}},
        {"name": "route_default", "match": {"prefix": "/"},
         "request_headers_to_add": [{"header": {"key": "x-went", "value": "default"}}],
         "route": {"cluster": "a"}},
    ]
    return bootstrap(lp, ap, [f], routes, [extproc_cluster(sock_dir, 1), upstream_cluster("a", up), upstream_cluster("b", up)])


NEW_BODY = b'{"rewritten": true, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}'


def handler(stage, s, req, st):
    if s["kind"] == "request_body":
        r = pb.ProcessingResponse()
        c = r.request_body.response
        c.header_mutation.CopyFrom(hm({"x-route": "b", "x-set": "1", "content-length": str(len(NEW_BODY))}, ["x-remove"]))
        c.body_mutation.body = NEW_BODY
        c.clear_route_cache = True
        return [r]
    return [cont(s["kind"])]


def client(port: int):
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.post("/v1/chat/completions?q=1", content=b'{"model":"m"}',
                   headers={"content-type": "application/json", "x-foo": "bar", "x-remove": "gone"})
        out.append(("POST body", r.status_code, r.json()["echo"] if r.status_code == 200 else r.text))
        r = c.post("/v1/empty", headers={"x-foo": "bar"})  # content-length: 0 -> eos on headers
        out.append(("POST nobody", r.status_code, r.json()["echo"] if r.status_code == 200 else r.text))
        r = c.get("/v1/models")
        out.append(("GET", r.status_code, r.json()["echo"] if r.status_code == 200 else r.text))
    return out


import harness
harness.LIMIT = 3000


async def main():
    res, env = await run(build, handler, client)
    for name, code, echo in res:
        if isinstance(echo, dict):
            print(name, code, "upstream saw:", echo["method"], echo["path"],
                  {k: v for k, v in echo["headers"].items() if k in ("x-went", "x-set", "x-remove", "x-route", "content-length", "x-foo", "transfer-encoding")},
                  "body:", echo["body"][:80])
        else:
            print(name, code, echo)
    dump_log("ext_proc messages")
    print("\n".join(env.access()))
    print("\n".join(env.errors()[-10:]))


asyncio.run(main())
